"""onnxruntime running one decoder-with-past ONNX graph (a dynamo export of the HF model), with
optional offline fusions and ORT quantization (dynamic int8, MatMulNBits int8/int4)."""

from __future__ import annotations

from functools import partial

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import ort_provider


def rule(candidate: CandidateConfig, device: str) -> str | None:
    if candidate.fuse and candidate.quant == "int8_static":
        return "fuse=true before static int8 calibration is untested; use fuse=false with quant=int8_static"
    if candidate.fuse and device == "cuda" and candidate.quant != "none":
        return (
            "fuse=true needs the fp32 graph on cuda: the fp16 export keeps RMSNorm between Casts, "
            "which ORT's fusions do not match; use quant=none or fuse=false"
        )
    return None


INFO = EngineInfo(
    name="ort",
    samples=True,
    engine_class="autoopt.engines.ort.engine:OrtEngine",
    quants={"cpu": ("none", "int8_dynamic", "int8_static", "int8_weight", "int4"), "cuda": ("none", "fp16", "int4")},
    requires={
        "cpu": (Requirement("onnxruntime", "cpu"),),
        "cuda": (Requirement("onnxruntime", "gpu", probe=partial(ort_provider, "CUDAExecutionProvider", "gpu")),),
    },
    rule=rule,
    continuous_on=("cpu",),  # on a device it keeps the KV cache there between steps; a continuous batch's joins
    # would have to move it
    description="torch.onnx dynamo export run by onnxruntime; int4/int8_weight = MatMulNBits, "
    "int8_dynamic = quantize_dynamic, int8_static = calibrated QDQ",
)
