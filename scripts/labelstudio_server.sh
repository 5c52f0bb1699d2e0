#!/usr/bin/env bash
# Start a local Label Studio (from .venv-ls) on loopback, set up for the clipvis ML backend:
# legacy API tokens, local-files serving, and ML backends allowed on 127.0.0.1.
# Usage: scripts/labelstudio_server.sh [DATA_DIR] [PORT]      (runs in the foreground)
# First start runs the database migrations (~45 s). Defaults can be overridden via the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LABEL_STUDIO_BASE_DATA_DIR:-$PWD/.cache/label-studio}}
PORT=${2:-8080}
[ -x .venv-ls/bin/label-studio ] || {
  echo "Label Studio is not installed: python3.11 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2" >&2
  exit 2
}
export LABEL_STUDIO_BASE_DATA_DIR=$DATA
export LABEL_STUDIO_USERNAME=${LABEL_STUDIO_USERNAME:-admin@example.com}
export LABEL_STUDIO_PASSWORD=${LABEL_STUDIO_PASSWORD:-clipvis-admin}
export LABEL_STUDIO_USER_TOKEN=${LABEL_STUDIO_USER_TOKEN:-clipvis-dev-token}
# Must be on at the very first start, or "Authorization: Token ..." answers 401 for good.
export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true
export LOCAL_FILES_SERVING_ENABLED=true
export LOCAL_FILES_DOCUMENT_ROOT=${LOCAL_FILES_DOCUMENT_ROOT:-$DATA/files}
export COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false
export LABEL_STUDIO_HOST=${LABEL_STUDIO_HOST:-http://127.0.0.1:$PORT}
# A backend on the same host (127.0.0.1) is blocked unless both are off.
export ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false
mkdir -p "$DATA" "$LOCAL_FILES_DOCUMENT_ROOT"
exec .venv-ls/bin/label-studio start --no-browser --internal-host 127.0.0.1 -p "$PORT"
