"""Helpers of the ONNX passes: one `model.onnx` (plus external data when large) beside the config and
tokenizer files copied from the model folder (the layout is `autoopt.artifacts`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from autoopt.artifacts import ONNX_MODEL as MODEL_FILE

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's limit on one serialized model


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy config, tokenizer and report files so `dst` is self-contained; never the weights."""
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(MODEL_FILE) and f.suffix not in _WEIGHT_SUFFIXES:
            shutil.copy2(f, dst / f.name)


def needs_external_data(folder: Path) -> bool:
    """Whether the ONNX model in `folder` (graph plus external data) is too large for one file."""
    return sum(f.stat().st_size for f in folder.glob(f"{MODEL_FILE}*")) > _EXTERNAL_DATA_THRESHOLD

