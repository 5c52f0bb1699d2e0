#!/usr/bin/env bash
# Start a throw-away Redis on 127.0.0.1:6379 unless one already answers there.
set -euo pipefail
PORT=${1:-6379}
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
  echo "redis already listening on 127.0.0.1:$PORT"
  exit 0
fi
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && { echo "redis started on 127.0.0.1:$PORT"; exit 0; }
  sleep 0.1
done
echo "redis did not start on 127.0.0.1:$PORT" >&2
exit 1
