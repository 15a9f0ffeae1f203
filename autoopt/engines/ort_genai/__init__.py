"""onnxruntime-genai: the model builder's fused graph (GroupQueryAttention, MatMulNBits) run by its own
generation loop.

On CPU only fp32 and the MatMulNBits weight-only schemes run: the builder's fp16 graph fails at run
time there (a Cast node) and bf16 at load (no Where(16) kernel).
"""

from __future__ import annotations

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, PassStep

# Candidate quant → the builder's `-p`.
BUILDER_PRECISION = {"none": "fp32", "fp16": "fp16", "bf16": "bf16", "int8_weight": "int8", "int4": "int4"}


def _plan(candidate: CandidateConfig, device: str) -> list[PassStep]:
    settings: dict[str, object] = {
        "precision": BUILDER_PRECISION[candidate.quant],
        "execution_provider": device,
    }
    if candidate.quant in ("int4", "int8_weight"):
        # MatMulNBits takes the same block size and compute type at 8 bits as at 4.
        settings["block_size"] = candidate.int4_block_size
        settings["accuracy_level"] = candidate.int4_accuracy_level
    return [PassStep("genai_build", settings)]


INFO = EngineInfo(
    name="ort_genai",
    engine_class="autoopt.engines.ort_genai.engine:GenaiEngine",
    quants={"cpu": ("none", "int8_weight", "int4"), "cuda": ("none", "fp16", "bf16", "int4")},
    knobs=(
        "quant",
        "int4_block_size",
        "int4_accuracy_level",
        "graph_opt",
        "kv_cache",
        "threads",
        "batch_size",
        "warmup",
    ),
    kv_caches=("dynamic", "static"),
    requires={"cpu": ("onnxruntime_genai", "core"), "cuda": ("onnxruntime_genai", "genai-cuda")},
    plan=_plan,
    description="onnxruntime-genai model builder (fused GQA, MatMulNBits int4/int8) and its generator",
)
