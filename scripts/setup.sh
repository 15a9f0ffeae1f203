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
# AUTOOPT_EXTRAS=gpu installs the CUDA builds of onnxruntime and onnxruntime-genai instead of the CPU ones.
# The two builds share package directories: when the other build is present, both go (removing one
# deletes files the other installed) and the chosen one is installed afresh.
extras="${AUTOOPT_EXTRAS:-cpu}"
other="onnxruntime-gpu onnxruntime-genai-cuda"
[[ ",$extras," == *,gpu,* ]] && other="onnxruntime onnxruntime-genai"
# shellcheck disable=SC2086
if .venv/bin/python -m pip show -q $other >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y onnxruntime onnxruntime-genai onnxruntime-gpu onnxruntime-genai-cuda 2>/dev/null || true
fi
.venv/bin/python -m pip install -q -e ".[$extras,dev]"
.venv/bin/python -c "import torch, onnxruntime, onnxruntime_genai, optuna, mlflow, hydra; print('autoopt environment ready: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
