"""Helpers of the ONNX passes: one `model.onnx` (plus external data when large) beside the config and
tokenizer files copied from the model folder (the layout is `autoopt.artifacts`)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import onnx
from onnx import numpy_helper

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


def weights_as_initializers(src: Path, work: Path) -> Path:
    """`src`'s model, or a copy in `work` in which each MatMul weight read through a Transpose of a 2-D initializer
    is an initializer of its own. The export writes a tied lm_head as MatMul(x, Transpose(embedding table)), which
    the quantizers skip; untied, the lm_head is quantized like the others and the lookup keeps the float table."""
    model = onnx.load(src / MODEL_FILE, load_external_data=False)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    transposes = {
        n.output[0]: n for n in graph.node
        if n.op_type == "Transpose" and n.input[0] in initializers and len(initializers[n.input[0]].dims) == 2
        and [list(a.ints) for a in n.attribute if a.name == "perm"] in ([], [[1, 0]])
    }
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in transposes]
    if not matmuls:
        return src / MODEL_FILE
    onnx.load_external_data_for_model(model, str(src))
    readers = Counter([*(name for n in graph.node for name in n.input), *(o.name for o in graph.output)])
    untied: dict[str, str] = {}  # transposed output -> its initializer
    for node in matmuls:
        transpose = transposes[node.input[1]]
        if transpose.output[0] not in untied:
            name = untied[transpose.output[0]] = f"{transpose.input[0]}.transposed"
            array = numpy_helper.to_array(initializers[transpose.input[0]]).T
            graph.initializer.append(numpy_helper.from_array(array, name))
        readers[node.input[1]] -= 1
        node.input[1] = untied[transpose.output[0]]
    for output in untied:
        if readers[output] == 0:
            graph.node.remove(transposes[output])
    out = work / MODEL_FILE
    onnx.save(model, out, save_as_external_data=True, location=f"{MODEL_FILE}.data")
    return out
