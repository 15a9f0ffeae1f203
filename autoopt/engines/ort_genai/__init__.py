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
    samples=True,
    engine_class="autoopt.engines.ort_genai.engine:GenaiEngine",
    quants={"cpu": ("none", "int8_weight", "int4"), "cuda": ("none", "fp16", "bf16", "int4")},
    requires={
        "cpu": (Requirement("onnxruntime_genai", "cpu"),),
        "cuda": (Requirement("onnxruntime_genai", "gpu", probe=genai_cuda),),
    },
    description="onnxruntime-genai model builder (fused GQA, MatMulNBits int4/int8) and its generator",
    # The text-only causal LMs the 0.18 builder's `create_model` has a class for (multimodal ones left out).
    architectures=(
        "Ernie4_5ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "GraniteForCausalLM",
        "InternLM2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "NemotronForCausalLM", "OlmoForCausalLM",
        "PhiForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "SmolLM3ForCausalLM",
    ),
)
