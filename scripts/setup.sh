#!/usr/bin/env bash
# Create .venv and install autoopt: torch first, pinned to 2.13.0 and to the build the extras need, then
# the package with its extras (AUTOOPT_EXTRAS, default cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
# A venv made where python3-venv is missing has no pip; make it again rather than fail on every run.
.venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv && "$python" -m venv .venv; }
.venv/bin/python -m pip install -q --upgrade pip
# AUTOOPT_EXTRAS=gpu installs the CUDA builds of torch, onnxruntime and onnxruntime-genai instead of the CPU ones.
extras="${AUTOOPT_EXTRAS:-cpu}"
gpu=0
[[ ",$extras," == *,gpu,* ]] && gpu=1
# On Linux x86_64, PyPI's torch==2.13.0 is the multi-GB CUDA build; the CPU one is torch==2.13.0+cpu, from a
# local wheel or PyTorch's CPU index. TORCH_INDEX_URL, when set, is the one place torch comes from.
torch_req=torch==2.13.0
build=CUDA
example=https://download.pytorch.org/whl/cu128
if [ "$gpu" = 0 ]; then
  build=CPU
  example=https://download.pytorch.org/whl/cpu
  if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then torch_req=torch==2.13.0+cpu; fi
fi
wanted_torch() {
  .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0' or (torch.version.cuda is not None) != bool($gpu))" 2>/dev/null
}
if ! wanted_torch; then
  # pip counts 2.13.0+cpu as satisfying torch==2.13.0: a build of the wrong kind goes first.
  .venv/bin/python -m pip uninstall -q -y torch 2>/dev/null || true
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    .venv/bin/python -m pip install -q --index-url "$TORCH_INDEX_URL" "$torch_req"
  elif [ "$torch_req" = torch==2.13.0+cpu ]; then
    # The configured sources first (they may hold the wheel, offline); PyTorch's CPU index otherwise.
    .venv/bin/python -m pip install -q "$torch_req" 2>/dev/null \
      || .venv/bin/python -m pip install -q --index-url "$example" "$torch_req"
  else
    .venv/bin/python -m pip install -q "$torch_req"
  fi
  wanted_torch || { echo "error: the torch installed is not the $build build of 2.13.0 that AUTOOPT_EXTRAS=$extras needs; set TORCH_INDEX_URL to an index that has it (e.g. $example)" >&2; exit 1; }
fi
# The CPU and CUDA builds of the ONNX runtimes share package directories: when the other build is present,
# both go (removing one deletes files the other installed) and the chosen one is installed afresh.
other="onnxruntime-gpu onnxruntime-genai-cuda"
[ "$gpu" = 1 ] && other="onnxruntime onnxruntime-genai"
# shellcheck disable=SC2086
if .venv/bin/python -m pip show -q $other >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y onnxruntime onnxruntime-genai onnxruntime-gpu onnxruntime-genai-cuda 2>/dev/null || true
fi
.venv/bin/python -m pip install -q -e ".[$extras,dev]"
.venv/bin/python -c "import torch, onnxruntime, onnxruntime_genai, optuna, mlflow, hydra; print('autoopt environment ready: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
