#!/usr/bin/env bash
# Every GPU check in one command (bench/gpu.py: the paper smoke DAG on CUDA with bf16, ClassSR batched vs
# per patch and vs branch-O, the loop vs a plain PyTorch loop, evaluate's GPU columns) -> reports/gpu.json.
#   bash bench/gpu.sh [--out FILE]
# On a machine without a CUDA GPU it stops at once and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi finds none); these checks need one. Nothing was run." >&2
  exit 1
fi
exec "$PY" bench/gpu.py "$@"
