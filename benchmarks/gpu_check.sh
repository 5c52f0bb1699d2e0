#!/usr/bin/env bash
# One-call GPU check: parity on CUDA, autocast agreement, CUDA OOM fallback, ConvNeXt-B 480p
# frames/s (windows 1/5/10 x fp32/bf16/fp16), text-classifier speed, one training step; one table.
# Needs only the repository and its set-up (scripts/setup.sh -> .venv). Budget: under 8 minutes.
#   bash benchmarks/gpu_check.sh            (CLIPVIS_REFERENCE_DIR: parity fixtures, default ../shared/reference)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! command -v "$PY" >/dev/null; then
    echo "gpu_check: error: $PY not found: run scripts/setup.sh first (or set PYTHON)" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: error: no NVIDIA GPU here (nvidia-smi missing or failing): run this on a CUDA machine" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONUNBUFFERED=1 FIFTYONE_DO_NOT_TRACK=true
# The repository first: its subprocesses (pytest, bench_train) import clipvis_core uninstalled too.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Hard stop below 8 minutes: a hung section must not eat the machine's time.
exec timeout --signal=INT --kill-after=10 460 "$PY" benchmarks/gpu_check.py "$@"
