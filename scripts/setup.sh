#!/usr/bin/env bash
# Create .venv and install autoopt with its CPU stack. torch goes in first, pinned: an open torch
# requirement lets pip pick a multi-GB CUDA build on a machine that has no GPU.
# Elsewhere than these machines, point TORCH_INDEX_URL at a CPU wheel index if PyPI's default build
# for your platform is a CUDA one (e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, onnxruntime, onnxruntime_genai, optuna, mlflow, hydra; print('autoopt environment ready: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
