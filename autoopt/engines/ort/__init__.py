"""onnxruntime running one decoder-with-past ONNX graph (a dynamo export of the HF model), with
optional offline fusions and ORT quantization (dynamic int8, MatMulNBits int8/int4)."""

from __future__ import annotations

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, PassStep


def plan(candidate: CandidateConfig, device: str) -> list[PassStep]:
    """export (fp16 on cuda for fp16 and int4) → optional fusions → the quantization pass."""
    quant = candidate.quant
    half = device == "cuda" and quant in ("fp16", "int4")
    steps = [
        PassStep("onnx_export", {"device": "cuda" if half else "cpu", "dtype": "fp16" if half else "fp32"})
    ]
    if candidate.fuse:
        steps.append(PassStep("ort_fuse", {"use_gpu": device == "cuda"}))
    if quant == "int8_dynamic":
        steps.append(PassStep("ort_int8_dynamic", {"per_channel": True}))
    elif quant in ("int4", "int8_weight"):
        settings = {
            "bits": 4 if quant == "int4" else 8,
            "block_size": candidate.int4_block_size,
            "accuracy_level": candidate.int4_accuracy_level,
            "symmetric": True,
        }
        steps.append(PassStep("ort_weight_only", settings))
    return steps


def rule(candidate: CandidateConfig, device: str) -> str | None:
    if candidate.fuse and device == "cuda" and candidate.quant != "none":
        return (
            "fuse=true needs the fp32 graph on cuda: the fp16 export keeps RMSNorm between Casts, "
            "which ORT's fusions do not match; use quant=none or fuse=false"
        )
    return None


INFO = EngineInfo(
    name="ort",
    engine_class="autoopt.engines.ort.engine:OrtEngine",
    quants={"cpu": ("none", "int8_dynamic", "int8_weight", "int4"), "cuda": ("none", "fp16", "int4")},
    knobs=(
        "quant",
        "fuse",
        "int4_block_size",
        "int4_accuracy_level",
        "graph_opt",
        "threads",
        "batch_size",
        "warmup",
    ),
    kv_caches=("dynamic",),
    requires={"cpu": ("onnxruntime", "core"), "cuda": ("onnxruntime", "gpu")},
    plan=plan,
    rule=rule,
    description="torch.onnx dynamo export run by onnxruntime; int4/int8_weight = MatMulNBits, "
    "int8_dynamic = quantize_dynamic",
)
