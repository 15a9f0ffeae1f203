"""File layout shared by the ONNX passes and `OrtEngine`: one `model.onnx` (plus external data when
large) beside the config and tokenizer files copied from the model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

MODEL_FILE = "model.onnx"
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


def kv_names(num_layers: int, prefix: str) -> list[str]:
    """`{prefix}.{layer}.key|value` in the order the graph's inputs and outputs list them."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
