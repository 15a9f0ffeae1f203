"""ONNX Runtime weight quantization of the exported decoder.

`ort_int8_dynamic`: int8 weights, activations quantized per call (MatMulInteger / DynamicQuantizeMatMul).
`ort_weight_only`: 4- or 8-bit block-quantized weights in MatMulNBits. Each pass checks the graph it
wrote, since the quantizers skip nodes or options silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, matmul_nbits_quantizer, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from autoopt.passes.onnx_files import MODEL_FILE, copy_side_files, needs_external_data

# It logs two INFO lines per graph node, which would bury the build's own log trail.
logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)

_BITS = (4, 8)
_ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8


def run_ort_int8_dynamic(src: Path, dst: Path, per_channel: bool = True) -> None:
    copy_side_files(src, dst)
    quantize_dynamic(
        src / MODEL_FILE,
        dst / MODEL_FILE,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        use_external_data_format=needs_external_data(src),
    )
    ops = Counter(node.op_type for node in onnx.load(dst / MODEL_FILE, load_external_data=False).graph.node)
    if ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] == 0:
        raise RuntimeError(f"ort_int8_dynamic quantized no MatMul in {src / MODEL_FILE}")


def run_ort_weight_only(
    src: Path, dst: Path, bits: int = 4, block_size: int = 32, accuracy_level: int = 4, symmetric: bool = True
) -> None:
    _check_weight_only_settings(bits, block_size, accuracy_level)
    quantizer = MatMulNBitsQuantizer(
        str(src / MODEL_FILE),
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
    _verify_matmul_nbits(
        onnx.load(dst / MODEL_FILE, load_external_data=False), bits, block_size, accuracy_level, symmetric
    )


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
