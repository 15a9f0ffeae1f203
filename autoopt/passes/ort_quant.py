"""ONNX Runtime weight quantization of the exported decoder.

`ort_int8_dynamic`: int8 weights, activations quantized per call (MatMulInteger / DynamicQuantizeMatMul).
`ort_weight_only`: 4- or 8-bit block-quantized weights in MatMulNBits. Each pass checks the graph it
wrote, since the quantizers skip nodes or options silently.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, matmul_nbits_quantizer, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from autoopt.passes.onnx_files import MODEL_FILE, copy_side_files, needs_external_data, weights_as_initializers

# It logs two INFO lines per graph node, which would bury the build's own log trail.
logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)

_BITS = (4, 8)
_ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8


def run_ort_int8_dynamic(src: Path, dst: Path, per_channel: bool = True) -> None:
    copy_side_files(src, dst)
    # A model's size, so inside dst rather than /tmp; not beside it, where a build killed outright (SIGKILL) would
    # leave it for good: the next build of this entry clears the half-built dst (`passes.pipeline`), this included.
    with tempfile.TemporaryDirectory(prefix="ort_quant_", dir=dst) as work:
        quantize_dynamic(
            weights_as_initializers(src, Path(work)),
            dst / MODEL_FILE,
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=needs_external_data(src),
        )
    graph = onnx.load(dst / MODEL_FILE, load_external_data=False).graph
    ops = Counter(node.op_type for node in graph.node)
    if ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] == 0:
        raise RuntimeError(f"ort_int8_dynamic quantized no MatMul in {src / MODEL_FILE}")
    _verify_no_float_weights_left(graph, "ort_int8_dynamic")


def run_ort_weight_only(
    src: Path, dst: Path, bits: int = 4, block_size: int = 32, accuracy_level: int = 4, symmetric: bool = True
) -> None:
    _check_weight_only_settings(bits, block_size, accuracy_level)
    with tempfile.TemporaryDirectory(prefix="ort_quant_", dir=dst) as work:  # inside dst: see run_ort_int8_dynamic
        quantizer = MatMulNBitsQuantizer(
            str(weights_as_initializers(src, Path(work))),
            bits=bits,
            block_size=block_size,
            is_symmetric=symmetric,
            accuracy_level=accuracy_level,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
    copy_side_files(src, dst)
    quantizer.model.save_model_to_file(
        str(dst / MODEL_FILE), use_external_data_format=needs_external_data(src)
    )
    graph = onnx.load(dst / MODEL_FILE, load_external_data=False)
    _verify_matmul_nbits(graph, bits, block_size, accuracy_level, symmetric)
    _verify_no_float_weights_left(graph.graph, "ort_weight_only")


def _verify_no_float_weights_left(graph: onnx.GraphProto, name: str) -> None:
    """Fail if a MatMul still multiplies by a float initializer, directly or through Transpose, Identity or Cast: a
    weight the quantizer skipped."""
    floats = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    producers = {o: n for n in graph.node for o in n.output}

    def source(tensor: str) -> str:
        while (node := producers.get(tensor)) is not None and node.op_type in ("Transpose", "Identity", "Cast"):
            tensor = node.input[0]
        return tensor

    left = [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and source(n.input[1]) in floats]
    if left:
        raise RuntimeError(f"{name} left {len(left)} MatMul weight(s) in float: {', '.join(left[:3])}")


def _check_weight_only_settings(bits: int, block_size: int, accuracy_level: int) -> None:
    if bits not in _BITS:
        raise ValueError(f"ort_weight_only bits={bits} is not supported; choose one of: 4, 8")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(
            f"ort_weight_only block_size={block_size} must be a power of two >= 16 (e.g. 32, 64, 128)"
        )
    if accuracy_level not in _ACCURACY_LEVELS:
        raise ValueError(f"ort_weight_only accuracy_level={accuracy_level} must be one of 0..4")


def _verify_matmul_nbits(
    model: onnx.ModelProto, bits: int, block_size: int, accuracy_level: int, symmetric: bool
) -> None:
    """Fail unless every MatMulNBits node carries the requested options (and there is at least one)."""
    nodes = [node for node in model.graph.node if node.op_type == "MatMulNBits"]
    if not nodes:
        raise RuntimeError("ort_weight_only wrote no MatMulNBits node: no MatMul weight was quantized")
    wanted = {"bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs.setdefault("accuracy_level", 0)  # the quantizer omits the attribute at its default
        found = {key: attrs.get(key) for key in wanted}
        has_zero_points = len(node.input) > 3 and node.input[3] != ""
        if found != wanted or has_zero_points == symmetric:
            raise RuntimeError(
                f"ort_weight_only: node {node.name} has {found}, zero points={has_zero_points}; "
                f"requested {wanted}, symmetric={symmetric}"
            )
