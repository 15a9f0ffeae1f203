"""onnxruntime-genai's model builder: an HF folder → one fused ONNX decoder (GroupQueryAttention with
rotary inside, MatMulNBits when quantized) plus the `genai_config.json` its runtime reads."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
_WEIGHT_BITS = {"int4": 4, "int8": 8}
_LOG_TAIL_CHARS = 4000


def run_genai_build(
    src: Path,
    dst: Path,
    precision: str,
    execution_provider: str,
    block_size: int | None = None,
    accuracy_level: int | None = None,
) -> None:
    """Build `src` into `dst`. `block_size` and `accuracy_level` configure MatMulNBits (int4/int8 only)."""
    if precision not in _PRECISIONS:
        raise ValueError(
            f"genai_build precision={precision!r} is unknown; choose one of: {', '.join(_PRECISIONS)}"
        )
    quant_options = {"block_size": block_size, "accuracy_level": accuracy_level}
    quant_options = {k: v for k, v in quant_options.items() if v is not None}
    if quant_options and precision not in _WEIGHT_BITS:
        raise ValueError(
            f"genai_build {', '.join(quant_options)} apply to int4/int8 only, not precision={precision}"
        )
    # The builder's `int4_`-prefixed option names are silently ignored in 0.18; the plain ones take effect.
    extra = [f"{k}={v}" for k, v in quant_options.items()]
    with tempfile.TemporaryDirectory(prefix="genai_build_") as work:
        command = [
            sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(Path(src).resolve()), "-o", str(Path(dst).resolve()),
            "-p", precision, "-e", execution_provider, "-c", str(Path(work) / "cache"),
        ] + (["--extra_options", *extra] if extra else [])  # fmt: skip
        result = subprocess.run(
            command,
            cwd=work,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    log = result.stdout[-_LOG_TAIL_CHARS:]
    if result.returncode != 0:
        raise RuntimeError(
            f"onnxruntime-genai builder failed (exit {result.returncode}) on {src}; its log ends:\n{log}"
        )
    missing = [name for name in ("model.onnx", "genai_config.json") if not (Path(dst) / name).is_file()]
    if missing:
        raise RuntimeError(
            f"onnxruntime-genai builder exited 0 but wrote no {', '.join(missing)} in {dst}; log:\n{log}"
        )
    if precision in _WEIGHT_BITS:
        check_matmulnbits(Path(dst) / "model.onnx", bits=_WEIGHT_BITS[precision], **quant_options)


def check_matmulnbits(
    model: Path, bits: int, block_size: int | None = None, accuracy_level: int | None = None
) -> None:
    """Raise unless the graph has MatMulNBits nodes and every one carries the requested attributes."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    if not nodes:
        raise RuntimeError(f"{model} has no MatMulNBits node: the builder did not quantize the weights")
    wanted = {"bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
    for node in nodes:
        found = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        wrong = {k: found.get(k) for k, v in wanted.items() if v is not None and found.get(k) != v}
        if wrong:
            raise RuntimeError(f"{model}: MatMulNBits {node.name} has {wrong}, but {wanted} was requested")
