#!/usr/bin/env bash
# Run the whole test suite (parity tests read CLIPVIS_REFERENCE_DIR, default ../shared/reference).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLIPVIS_REFERENCE_DIR=${CLIPVIS_REFERENCE_DIR:-$(cd .. && pwd)/shared/reference}
export FIFTYONE_DO_NOT_TRACK=true FIFTYONE_DATABASE_VALIDATION=false
bash scripts/start_redis.sh >/dev/null
exec .venv/bin/python -m pytest "$@"
