#!/usr/bin/env bash
# Create .venv (once) and install the project with its test extras.
# torch: kept if the venv already has one (e.g. your CUDA build); otherwise $TORCH_SPEC, default the
# CPU build torch==2.13.0. GPU users: `TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`
# or install torch into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
.venv/bin/python -m pipeline.offline_plots >/dev/null  # dvc plots show / diff without a network
