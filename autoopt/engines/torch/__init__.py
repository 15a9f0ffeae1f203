"""Eager transformers: the fp32 reference, plus bf16/fp16 casts and torch dynamic int8.

Quantization happens at load time, so the artifact is the model folder itself.
"""

from __future__ import annotations

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, PassStep


def _plan(candidate: CandidateConfig, device: str) -> list[PassStep]:
    return []


INFO = EngineInfo(
    name="torch",
    engine_class="autoopt.engines.torch.engine:TorchEngine",
    quants={"cpu": ("none", "bf16", "int8_dynamic"), "cuda": ("none", "bf16", "fp16")},
    knobs=("quant", "kv_cache", "threads", "batch_size", "warmup"),
    kv_caches=("dynamic", "static"),
    requires={"cpu": ("torch", "core"), "cuda": ("torch", "a CUDA build of torch")},
    plan=_plan,
    description="HF transformers eager; int8_dynamic = torch.ao dynamic quantization of nn.Linear",
)
