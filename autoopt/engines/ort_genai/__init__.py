"""onnxruntime-genai: the model builder's fused graph (GroupQueryAttention, MatMulNBits) run by its own
generation loop.

On CPU only fp32 and the MatMulNBits weight-only schemes run: the builder's fp16 graph fails at run
time there (a Cast node) and bf16 at load (no Where(16) kernel).
"""

from __future__ import annotations

from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import genai_cuda

INFO = EngineInfo(
    name="ort_genai",
    engine_class="autoopt.engines.ort_genai.engine:GenaiEngine",
    quants={"cpu": ("none", "int8_weight", "int4"), "cuda": ("none", "fp16", "bf16", "int4")},
    requires={
        "cpu": (Requirement("onnxruntime_genai"),),
        "cuda": (Requirement("onnxruntime_genai", "genai-cuda", probe=genai_cuda),),
    },
    description="onnxruntime-genai model builder (fused GQA, MatMulNBits int4/int8) and its generator",
)
