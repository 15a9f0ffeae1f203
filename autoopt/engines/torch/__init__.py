"""Eager transformers: the fp32 reference, plus bf16/fp16 casts and torch dynamic int8.

Quantization happens at load time, so the artifact is the model folder itself.
"""

from __future__ import annotations

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import cuda_device
from autoopt.engines.torch.attention import attn_backend_problem

# The float each quant attends in (`TorchEngine.load` casts the whole model; dynamic int8 keeps fp32 activations).
ATTENTION_DTYPE = {"none": "float32", "int8_dynamic": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _rule(candidate: CandidateConfig, device: str) -> str | None:
    # HF's SDPA path passes a mask over a static cache's unused slots; a dynamic cache of equal-length rows needs
    # none (rows of mixed lengths do: such an engine serves equal lengths only, `TorchEngine.mixed_lengths`).
    dtype = ATTENTION_DTYPE.get(candidate.quant, "float32")
    continuous = candidate.serving_batching == "continuous"
    if continuous and candidate.kv_cache == "static":
        return "serving_batching=continuous needs kv_cache=dynamic (rows join and leave a batch's cache between steps)"
    if continuous:  # its decode steps pass a mask, and each joining row's prefill (dynamic cache, alone) none
        return (attn_backend_problem(candidate.attn_backend, device, dtype, masked=True)
                or attn_backend_problem(candidate.attn_backend, device, dtype, masked=False))
    return attn_backend_problem(candidate.attn_backend, device, dtype, masked=candidate.kv_cache == "static")


INFO = EngineInfo(
    name="torch",
    samples=True,
    engine_class="autoopt.engines.torch.engine:TorchEngine",
    quants={"cpu": ("none", "bf16", "int8_dynamic"), "cuda": ("none", "bf16", "fp16")},
    requires={
        "cpu": (Requirement("torch"),),
        "cuda": (Requirement("torch", hint="a CUDA build of torch (pytorch.org/get-started)", probe=cuda_device),),
    },
    description="HF transformers eager; int8_dynamic = torch.ao dynamic quantization of nn.Linear",
    rule=_rule,
    static_cache=lambda candidate: candidate.kv_cache == "static",
)
