"""Eager transformers: the fp32 reference, plus bf16/fp16 casts and torch dynamic int8.

Quantization happens at load time, so the artifact is the model folder itself.
"""

from __future__ import annotations

from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import cuda_device

INFO = EngineInfo(
    name="torch",
    engine_class="autoopt.engines.torch.engine:TorchEngine",
    quants={"cpu": ("none", "bf16", "int8_dynamic"), "cuda": ("none", "bf16", "fp16")},
    requires={
        "cpu": (Requirement("torch"),),
        "cuda": (Requirement("torch", hint="a CUDA build of torch (pytorch.org/get-started)", probe=cuda_device),),
    },
    description="HF transformers eager; int8_dynamic = torch.ao dynamic quantization of nn.Linear",
)
