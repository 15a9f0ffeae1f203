"""A gpt-fast-style decode loop: the HF model's own modules driven by autoopt's loop over a preallocated KV
cache, with a fixed-shape decode step compiled by `torch.compile` (CUDA graphs with `reduce-overhead` on
cuda), prefill apart (eager, or compiled per bucketed prompt length), core-torch weight-only int8/int4 and
float8 (`torch._scaled_mm`), and a choice of SDPA kernel.

Quantization happens at load time, so the artifact is the model folder itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from autoopt.config.schema import CandidateConfig
from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import cuda_device
from autoopt.engines.torch.attention import attn_backend_problem

INT4_GROUPS = (32, 64, 128, 256)  # group sizes both int4 kernels (CPU and tinygemm) take
# The float the activations are computed in, by quant: the weight-only and float8 kernels take bf16 (cuda's
# tinygemm int4 takes nothing else), so a target must support bf16 to run them (see autoopt.space.validity).
COMPUTE_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16", "int8_weight": "bf16", "int4": "bf16",
                     "fp8": "bf16"}
_TORCH_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def _rule(candidate: CandidateConfig, device: str) -> str | None:
    if candidate.quant == "int4" and candidate.quant_block_size not in INT4_GROUPS:
        return (
            f"engine=torch_compiled int4 takes quant_block_size {', '.join(map(str, INT4_GROUPS))}, "
            f"not {candidate.quant_block_size}"
        )
    if problem := compile_tuning_problem(candidate.compile_tuning, candidate.compile_mode, device):
        return problem
    # The static-cache step always masks the cache's unused slots, and repeats KV heads where a backend needs it.
    dtype = _TORCH_DTYPE[COMPUTE_PRECISION.get(candidate.quant, "fp32")]
    return attn_backend_problem(candidate.attn_backend, device, dtype, masked=True, expands_gqa=True)


def compile_tuning_problem(tuning: str, mode: str, device: str) -> str | None:
    """Why `compile_tuning` cannot take effect: it tunes the Triton kernels inductor writes for cuda (on the CPU
    inductor writes C++, which it does not tune), and only a compiled step has kernels to tune."""
    if tuning == "none":
        return None
    if device != "cuda":
        return f"compile_tuning={tuning} tunes inductor's cuda kernels and has no effect on {device}; use none"
    if mode == "none":
        return f"compile_tuning={tuning} needs a compiled decode step; use compile_mode default or reduce-overhead"
    return None


def inductor_cache_env(cache_dir: str | Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment a process that loads this engine starts with, so that inductor keeps its compiled
    graphs under autoopt's cache (`<cache_dir>/inductor`) and a later trial or run of the same graphs
    compiles from it: {} when the user already chose a directory (`TORCHINDUCTOR_CACHE_DIR` in `environ`)."""
    if environ.get(INDUCTOR_CACHE_ENV):
        return {}
    return {INDUCTOR_CACHE_ENV: str(Path(cache_dir).expanduser() / "inductor")}


INFO = EngineInfo(
    name="torch_compiled",
    samples=True,  # its step returns the logits beside the argmax, read only for rows that sample
    engine_class="autoopt.engines.torch_compiled.engine:TorchCompiledEngine",
    quants={
        # cpu: aten._weight_int8pack_mm / _weight_int4pack_mm_for_cpu / _scaled_mm (checked on torch 2.13 CPU).
        "cpu": ("none", "bf16", "int8_weight", "int4", "fp8"),
        # cuda: gpt-fast's kernels (int8 cast inside the compiled matmul, tinygemm int4) and row-wise float8
        # _scaled_mm (sm_89+); each ran on an H200 (torch 2.11).
        "cuda": ("none", "bf16", "fp16", "int8_weight", "int4", "fp8"),
    },
    requires={
        "cpu": (Requirement("torch"),),
        "cuda": (
            Requirement("torch", hint="a CUDA build of torch (pytorch.org/get-started)", probe=cuda_device),
            Requirement("triton", hint="triton, which CUDA builds of torch ship (torch.compile's GPU backend)"),
        ),
    },
    description="torch.compile'd fixed-shape decode step over a static KV cache; weight-only int8/int4 and float8 "
    "in core torch",
    rule=_rule,
    architectures=("Qwen2ForCausalLM", "LlamaForCausalLM"),
    compute_precision={q: COMPUTE_PRECISION[q] for q in ("int8_weight", "int4", "fp8")},
    static_cache=lambda candidate: True,  # its decode step has fixed shapes: the whole cache, every token
)
