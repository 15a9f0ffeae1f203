"""A gpt-fast-style decode loop: the HF model's own modules driven by autoopt's loop over a preallocated KV
cache, with a fixed-shape decode step compiled by `torch.compile` (CUDA graphs with `reduce-overhead` on
cuda), prefill apart (eager, or compiled per bucketed prompt length), and core-torch weight-only int8/int4.

Quantization happens at load time, so the artifact is the model folder itself.
"""

from __future__ import annotations

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import cuda_device

INT4_GROUPS = (32, 64, 128, 256)  # group sizes both int4 kernels (CPU and tinygemm) take


def _rule(candidate: CandidateConfig, device: str) -> str | None:
    if candidate.quant == "int4" and candidate.quant_block_size not in INT4_GROUPS:
        return (
            f"engine=torch_compiled int4 takes quant_block_size {', '.join(map(str, INT4_GROUPS))}, "
            f"not {candidate.quant_block_size}"
        )
    return None


INFO = EngineInfo(
    name="torch_compiled",
    engine_class="autoopt.engines.torch_compiled.engine:TorchCompiledEngine",
    quants={
        # cpu: aten._weight_int8pack_mm / _weight_int4pack_mm_for_cpu (checked on torch 2.13 CPU).
        "cpu": ("none", "bf16", "int8_weight", "int4"),
        # cuda: written against gpt-fast's kernels (dequant-in-matmul int8, tinygemm int4); not yet run on a card.
        "cuda": ("none", "bf16", "fp16", "int8_weight", "int4"),
    },
    requires={
        "cpu": (Requirement("torch"),),
        "cuda": (
            Requirement("torch", hint="a CUDA build of torch (pytorch.org/get-started)", probe=cuda_device),
            Requirement("triton", hint="triton, which CUDA builds of torch ship (torch.compile's GPU backend)"),
        ),
    },
    description="torch.compile'd fixed-shape decode step over a static KV cache; weight-only int8/int4 in core torch",
    rule=_rule,
    architectures=("Qwen2ForCausalLM", "LlamaForCausalLM"),
)
