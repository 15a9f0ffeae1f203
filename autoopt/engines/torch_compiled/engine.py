"""A gpt-fast-style greedy loop behind the engine contract.

The HF model is loaded with its eager modules; autoopt drives them with its own forward over a KV cache
preallocated once per batch size (`max_batch x max_length`), so every decode step has the same shapes:
tokens (batch, 1), the cache position as a (1,) tensor, the whole cache behind a boolean mask. That step is
compiled with `torch.compile` at load (`compile_mode`): `default` is inductor; `reduce-overhead` adds CUDA
graphs on cuda, and on the CPU behaves like `default` (inductor has no CPU graphs to capture); `none` runs
the same loop eagerly. Prefill runs apart: eagerly at the prompt's own length (`prefill_bucket=0`), or
compiled once per bucketed length, the prompt right-padded to it (padded positions write cache slots that
decode overwrites before it ever attends to them; causality keeps them out of the real positions).

Nothing compiles inside a request: every graph (each batch size, each prefill bucket) is built and run
once by `load`, which records how long that took (`compile_seconds()`, `compile_report`) and whether
inductor's on-disk cache already held entries (`compile_cache_warm()`: a warm cache shortens compiles, so
a short compile time is read with it). Set `TORCHINDUCTOR_CACHE_DIR` in the environment the process starts
with (`inductor_cache_env`) to keep that cache under autoopt's.

`attn_backend` restricts SDPA to one kernel (`torch.nn.attention.sdpa_kernel`, entered inside the compiled
step so that dynamo traces it); under `efficient`/`cudnn` the grouped KV heads are repeated to one per query
head first (torch documents `enable_gqa` for flash and math only on cuda), and the teacher-forced HF forward
gets an explicit causal mask, so that transformers repeats them too.

Weight-only quantization uses core torch kernels only, with bf16 activations (torch 2.13's CPU kernels
take fp32 activations too, but through an unvectorized path that was 65-110x slower than an fp32 matmul on a
128-token prefill here): int8 per output channel (CPU `aten._weight_int8pack_mm`; cuda: the int8 weight
cast to bf16 inside the compiled step, which inductor folds into a batch-1 matmul only under
`compile_tuning=coordinate_descent`, see `compile_step`), int4 asymmetric per group of `quant_block_size` input
channels (CPU `aten._weight_int4pack_mm_for_cpu`; cuda tinygemm `aten._weight_int4pack_mm`), with `lm_head`
kept int8 under an int4 body. `fp8`: float8 e4m3 weights with one scale per output channel and activations
quantized per token at every call, multiplied by `torch._scaled_mm` with row-wise scales into bf16 (core
torch; it also runs on the CPU, where it is slow; on cuda it needs compute capability 8.9+). Each quant's cuda
path ran on an H200 with torch 2.11 (tests/gpu; experiments/2026-11-27-h200-compiled-decode.md).

Each layer's q/k/v and gate/up projections run as one matmul each (`fuse.py`), fused before quantizing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel
from transformers import AutoModelForCausalLM

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions, warn_if_written_differs
from autoopt.engines.torch.attention import attn_backend_problem, hf_logits, repeats_kv, sdpa_backends
from autoopt.engines.torch_compiled import INFO, INT4_GROUPS, compile_tuning_problem
from autoopt.engines.torch_compiled.fuse import fuse_projections

log = logging.getLogger("autoopt.engines")

RUNTIME_FILE = "torch_compiled_runtime.json"
COMPILE_MODES = ("none", "default", "reduce-overhead")
PREFILL_BUCKETS = (0, 32, 64, 128)  # 0: eager prefill at the prompt's own length
DEFAULT_COMPILE_MODE = "default"
DEFAULT_PREFILL_BUCKET = 0
_FLOAT = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}

_SNIPPET = '''\
# The compiled decode loop is autoopt's own code (a static-cache forward over the HF modules, compiled with
# torch.compile); there is no plain-transformers equivalent that reproduces its speed. This runs it from the
# bundle's folder with the settings it was measured with (torch_compiled_runtime.json).
import json
from pathlib import Path

import numpy as np

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine


def load(folder):
    s = json.loads((Path(folder) / "torch_compiled_runtime.json").read_text())
    candidate = CandidateConfig(engine="torch_compiled", quant=s["quant"], quant_block_size=s["group_size"])
    candidate.compile_mode, candidate.prefill_bucket = s["compile_mode"], s["prefill_bucket"]
    candidate.compile_tuning = s.get("compile_tuning", "none")
    candidate.attn_backend = s.get("attn_backend", "auto")
    runtime = RuntimeOptions(device=s["device"], threads=s["threads"], max_length=s["max_length"],
                             max_batch=max(s["batch_sizes"]), batch_size=min(s["batch_sizes"]))
    return TorchCompiledEngine.load(Path(folder), candidate, runtime)


def generate(engine, prompt_ids, max_new_tokens):
    """Greedy token ids, one per step; stops early at end of text."""
    eos = engine.eos_token_ids
    for step in engine.generate(np.array([prompt_ids], dtype=np.int64), max_new_tokens):
        token = int(step[0])
        yield token
        if token in eos:
            return


if __name__ == "__main__":
    print(list(generate(load("model"), [1, 2, 3], 32)))
'''


def runtime_settings(candidate: CandidateConfig, runtime: RuntimeOptions) -> dict[str, Any]:
    """Every setting `TorchCompiledEngine.load` applies, validated; as written to `torch_compiled_runtime.json`.

    Raises `ConfigError` (one line: key, value, fix) for a value this engine cannot run.
    """
    mode = candidate.compile_mode
    bucket = candidate.prefill_bucket
    if mode not in COMPILE_MODES:
        raise ConfigError(f"candidate.compile_mode={mode} is not valid; choose one of: {', '.join(COMPILE_MODES)}")
    if bucket not in PREFILL_BUCKETS:
        raise ConfigError(
            f"candidate.prefill_bucket={bucket} is not valid; choose one of: {', '.join(map(str, PREFILL_BUCKETS))}"
        )
    quants = INFO.quants.get(runtime.device)
    if quants is None:
        raise ConfigError(f"device={runtime.device} is not valid for engine torch_compiled; use cpu or cuda")
    if problem := compile_tuning_problem(candidate.compile_tuning, mode, runtime.device):
        raise ConfigError(f"candidate.{problem}")
    if candidate.quant not in quants:
        raise ConfigError(
            f"engine=torch_compiled does not run quant={candidate.quant} on {runtime.device}; it runs: "
            f"{', '.join(quants)}"
        )
    group = candidate.quant_block_size if candidate.quant == "int4" else None
    if group is not None and group not in INT4_GROUPS:
        raise ConfigError(
            f"candidate.quant_block_size={group} is not valid for engine=torch_compiled int4; choose one of: "
            f"{', '.join(map(str, INT4_GROUPS))}"
        )
    if runtime.max_length < 2 or runtime.max_batch < 1:
        raise ConfigError(
            f"runtime max_length={runtime.max_length}, max_batch={runtime.max_batch}: the static cache needs "
            "max_length >= 2 and max_batch >= 1"
        )
    half = "bfloat16"  # activations under weight-only quantization: the CPU kernels vectorize bf16, not fp32
    dtype = _FLOAT.get(candidate.quant, half)
    problem = attn_backend_problem(candidate.attn_backend, runtime.device, dtype, masked=True, expands_gqa=True)
    if problem:
        raise ConfigError(f"candidate.{problem}")
    return {
        "dtype": dtype,
        "quant": candidate.quant,
        "group_size": group,
        "compile_mode": mode,
        "compile_tuning": candidate.compile_tuning,
        "prefill_bucket": bucket,
        "attn_backend": candidate.attn_backend,
        "threads": runtime.threads,
        "device": runtime.device,
        "max_length": runtime.max_length,
        # One cache and one decode graph per size; a request of another size runs padded to the next one up.
        "batch_sizes": sorted({min(runtime.batch_size, runtime.max_batch), runtime.max_batch}),
    }


def compile_step(decoder: nn.Module, mode: str, tuning: str) -> Any:
    """The decode step compiled with `mode`, and with `tuning` (see `compile_options`)."""
    options = compile_options(mode, tuning)
    if options is None:
        return torch.compile(decoder, mode=mode, fullgraph=True, dynamic=False)
    return torch.compile(decoder, options=options, fullgraph=True, dynamic=False)


def compile_options(mode: str, tuning: str) -> dict[str, Any] | None:
    """inductor's options for `mode` under `tuning`; None: `mode` alone says it all. With coordinate_descent,
    inductor tunes each Triton kernel's launch config by coordinate descent, and (torch's mm decomposition, cuda
    only) lowers a one-row matmul to a pointwise-times-reduction kernel that takes the int8 weight's cast and
    scale in, instead of casting the whole weight to bf16 ahead of a cuBLAS call. torch.compile takes a mode or
    options, not both, so the mode's own options are spelled out."""
    if tuning == "none":
        return None
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), "coordinate_descent_tuning": True}


def prefill_lengths(bucket: int, capacity: int) -> list[int]:
    """The padded prompt lengths compiled for `bucket` (multiples of it, then the whole cache); [] = eager."""
    if bucket == 0:
        return []
    return [*range(bucket, capacity, bucket), capacity]


# ---------------------------------------------------------------------------------------------- quantization


class Int8WeightLinear(nn.Module):
    """`nn.Linear` with int8 weights, one float scale per output channel (symmetric, round to nearest)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:  # gpt-fast's form; the cast fuses into the matmul only under coordinate-descent tuning
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales
        else:
            flat = x.reshape(-1, self.in_features)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int4WeightLinear(nn.Module):
    """`nn.Linear` with 4-bit weights, asymmetric per group of `group` input channels, in the packed layout
    of the int4 matmul kernels: w = (q - 8) * scale + zero, scales and zeros stored as (K/group, N, 2)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, group: int, device: torch.device):
        super().__init__()
        weight = linear.weight.detach().float()
        n, k = weight.shape
        grouped = weight.reshape(n, k // group, group)
        low, high = grouped.amin(-1, keepdim=True), grouped.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-8)
        q = torch.round((grouped - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + 8 * scale
        scales_zeros = torch.stack([scale.reshape(n, -1), zero.reshape(n, -1)], dim=-1).transpose(0, 1).contiguous()
        self.out_features, self.in_features, self.group = n, k, group
        self.register_buffer("weight", _pack_int4(q, device))
        self.register_buffer("scales_zeros", scales_zeros.to(device=device, dtype=dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.is_cuda:
            y = torch.ops.aten._weight_int4pack_mm(flat, self.weight, self.group, self.scales_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group, self.scales_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448: e4m3 has no infinities, so every value must be scaled into range


def to_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D `x` as float8 e4m3 with one float32 scale per row (symmetric: x ~ q * scale), scales shaped (rows, 1).
    A row of zeros gets a tiny scale rather than a division by zero."""
    rows = x.float()
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (rows / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Float8Linear(nn.Module):
    """`nn.Linear` in float8 e4m3: weights with one scale per output channel (at load), activations with one
    scale per token (at every call), multiplied by `torch._scaled_mm` with those row-wise scales into the
    activations' dtype. The weight is stored (N, K) row-major, so its transpose is the column-major operand the
    kernel takes."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        weight, scale = to_fp8_rows(linear.weight.detach())
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.reshape(1, -1).contiguous())  # (1, N) float32, as scale_b
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = to_fp8_rows(x.reshape(-1, self.in_features))
        y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.scale, out_dtype=x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def _fp8_fits(linear: nn.Linear) -> bool:
    n, k = linear.weight.shape
    return k % 16 == 0 and n % 16 == 0  # _scaled_mm's alignment on cuda


def _pack_int4(q: torch.Tensor, device: torch.device) -> torch.Tensor:
    """int32 (N, K) values 0..15 -> the kernel's packed tensor on `device`."""
    if device.type == "cuda":
        k = q.shape[1]
        inner_k_tiles = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
        pairs = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).to(device)
        return torch.ops.aten._convert_weight_to_int4pack(pairs, inner_k_tiles)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)


def _int4_fits(linear: nn.Linear, group: int, device: torch.device) -> bool:
    n, k = linear.weight.shape
    if device.type == "cuda":
        return k % group == 0 and k % 32 == 0 and n % 8 == 0
    return k % group == 0


def quantize_weights(model: nn.Module, quant: str, group: int | None, dtype: torch.dtype, device: torch.device) -> int:
    """Replace every `nn.Linear` of `model` in place (int8_weight: all int8; int4: int4, `lm_head` and layers
    whose shape the int4 kernel cannot take int8; fp8: all float8, but layers whose shape `_scaled_mm` cannot
    take, which stay in `dtype`). Returns how many layers were replaced."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if quant == "fp8":
            if not _fp8_fits(module):
                log.warning("torch_compiled: %s %s is not a multiple of 16; kept %s", name,
                            tuple(module.weight.shape), dtype)
                continue
            new: nn.Module = Float8Linear(module, dtype).to(device)
        elif quant == "int4" and attr != "lm_head" and group is not None and _int4_fits(module, group, device):
            new = Int4WeightLinear(module, dtype, group, device)
        else:
            if quant == "int4" and attr != "lm_head":
                log.warning("torch_compiled: %s %s does not fit int4 group %s; kept int8", name,
                            tuple(module.weight.shape), group)
            new = Int8WeightLinear(module, dtype).to(device)
        setattr(parent, attr, new)
        replaced += 1
    return replaced


# ------------------------------------------------------------------------------------- the static-cache step


class StaticDecoder(nn.Module):
    """The HF model's layers over KV buffers for one batch size (registered buffers, so that CUDA graphs treat
    them as static). `forward(ids, positions, last)` writes the keys/values of `ids` (batch, T) at `positions`
    (T,) into the cache, attends to every slot at or before each position, and returns the greedy next token
    (batch,) after the row `last` (1,) of `ids`. Weights are shared with the HF model, not copied; its
    projections must be fused first (`fuse_projections`).

    `backends` are the only SDPA kernels the step may use (None: SDPA picks); `repeat_kv` repeats the KV heads
    to one per query head before SDPA, for kernels that take no `enable_gqa`."""

    def __init__(
        self, model: nn.Module, batch: int, capacity: int, cos: torch.Tensor, sin: torch.Tensor,
        backends: list[Any] | None = None, repeat_kv: bool = False,
    ):
        super().__init__()
        inner, config = model.model, model.config
        self.embed, self.layers, self.norm, self.lm_head = inner.embed_tokens, inner.layers, inner.norm, model.lm_head
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = cos.shape[-1]
        self.qkv_sizes = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        self.backends = backends
        self.repeat = self.heads // self.kv_heads if repeat_kv else 1
        dtype, device = cos.dtype, cos.device
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("slots", torch.arange(capacity, device=device))
        for i in range(len(self.layers)):
            shape = (batch, self.kv_heads, capacity, self.head_dim)
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device))
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device))

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        if self.backends is None:
            return self._step(ids, positions, last)
        with sdpa_kernel(self.backends):  # inside the compiled region: dynamo traces the restriction
            return self._step(ids, positions, last)

    def _step(self, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        x = self.embed(ids)
        cos, sin = self.cos[positions][None, None], self.sin[positions][None, None]  # (1, 1, T, D)
        mask = self.slots[None, :] <= positions[:, None]  # (T, capacity): True = attend
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q, k, v = attn.qkv_proj(h).split(self.qkv_sizes, dim=-1)
            q = q.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k_cache, v_cache = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            k_cache.index_copy_(2, positions, k)
            v_cache.index_copy_(2, positions, v)
            if self.repeat > 1:
                k_cache, v_cache = k_cache.repeat_interleave(self.repeat, 1), v_cache.repeat_interleave(self.repeat, 1)
            o = F.scaled_dot_product_attention(
                q, k_cache, v_cache, attn_mask=mask, scale=attn.scaling,
                enable_gqa=k_cache.shape[1] != self.heads,
            )
            x = x + attn.o_proj(o.transpose(1, 2).reshape(batch, length, -1))
            mlp = layer.mlp
            gate, up = mlp.gate_up_proj(layer.post_attention_layernorm(x)).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        logits = self.lm_head(self.norm(x.index_select(1, last)))
        return logits[:, 0].argmax(dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _check_architecture(config: Any) -> None:
    windowed = getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if windowed or any(t != "full_attention" for t in layer_types):
        raise ValueError(
            "engine torch_compiled attends to the whole static cache; this model uses sliding-window layers "
            f"(layer_types={layer_types}); use engine=torch"
        )


class _Slot:
    """One batch size: its decoder (the cache), the callables for decode and each prefill length."""

    def __init__(self, decoder: StaticDecoder, step: Any, prefill: Any, lengths: list[int]):
        self.decoder, self.step, self.prefill, self.lengths = decoder, step, prefill, lengths


# ------------------------------------------------------------------------------------------------ the engine


class TorchCompiledEngine(Engine):
    name = "torch_compiled"

    def __init__(self, model: nn.Module, device: torch.device, settings: dict[str, Any]):
        self._model = model
        self._device = device
        self._settings = settings
        self._capacity = settings["max_length"]
        self._graphs = device.type == "cuda" and settings["compile_mode"] == "reduce-overhead"
        self._slots: dict[int, _Slot] = {}
        # One (1,) tensor per cache position, each its own storage: a slice of one arange would differ in
        # storage offset from step to step, which compiled graphs guard on.
        self._positions = [torch.tensor([p], device=device) for p in range(self._capacity)]
        self.compile_report: dict[str, float] = {}  # graph -> seconds its first (compiling) call took
        self.compile_cache: dict[str, Any] | None = None  # inductor's on-disk cache during load; None: not compiled
        self.cudagraph_skips = 0  # graphs inductor compiled without the CUDA graph that reduce-overhead asked for
        eos = model.generation_config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])

    def compile_seconds(self) -> float | None:
        """Seconds `load` spent compiling and first running every graph (with compile_mode=none: only running
        them once); `compile_report` has it per graph."""
        return sum(self.compile_report.values())

    def compile_cache_warm(self) -> bool | None:
        """Whether the on-disk compile cache served a graph `load` compiled (so `compile_seconds` was mostly a
        cache read); None when `load` compiled nothing: compile_mode=none, or every graph reused from an earlier
        load in this process (dynamo keeps them in memory). `compile_cache` has the directory and counts."""
        cache = self.compile_cache
        if cache is None or cache["hits"] + cache["misses"] == 0:
            return None
        return cache["hits"] > 0

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> TorchCompiledEngine:
        if runtime.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "engine torch_compiled on device cuda needs a CUDA build of torch and a CUDA device; none found"
            )
        settings = runtime_settings(candidate, runtime)
        warn_if_written_differs("torch_compiled", Path(artifact) / RUNTIME_FILE, settings)
        torch.set_num_threads(settings["threads"])
        device, dtype = torch.device(settings["device"]), getattr(torch, settings["dtype"])
        if settings["quant"] == "fp8" and device.type == "cuda":
            _require_fp8_card(device)
        # A named attention backend needs HF's SDPA attention for `logits` (transformers' default, but a model's
        # config may pick another); `auto` loads the model as the reference does.
        extra = {"attn_implementation": "sdpa"} if settings["attn_backend"] != "auto" else {}
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=dtype, **extra).eval()
        _check_architecture(model.config)
        fuse_projections(model)
        if settings["quant"] in ("int8_weight", "int4", "fp8"):
            quantize_weights(model, settings["quant"], settings["group_size"], dtype, device)
        model.to(device)
        engine = cls(model, device, settings)
        _raise_recompile_limit(len(settings["batch_sizes"]) * (1 + len(engine._prefill_lengths())))
        before, skips = _fx_cache_counts(), _cudagraph_skips()
        engine._build_slots()
        engine.cudagraph_skips = _cudagraph_skips() - skips
        if engine._graphs and engine.cudagraph_skips:
            log.warning("torch_compiled: inductor skipped CUDA graphs for %d graph(s), so decode steps launch their "
                        "kernels one by one; TORCH_LOGS=perf_hints says why", engine.cudagraph_skips)
        if settings["compile_mode"] != "none":
            engine.compile_cache = _compile_cache(before, _fx_cache_counts())
            log.info("torch_compiled: %d graphs in %.1fs; inductor cache %s: %d hits, %d misses",
                     len(engine.compile_report), engine.compile_seconds(), engine.compile_cache["dir"],
                     engine.compile_cache["hits"], engine.compile_cache["misses"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return engine

    def _prefill_lengths(self) -> list[int]:
        return prefill_lengths(self._settings["prefill_bucket"], self._capacity)

    @torch.inference_mode()
    def _build_slots(self) -> None:
        """Allocate each batch size's cache and run every graph once (compiling it), timing each."""
        positions = torch.arange(self._capacity, device=self._device)[None]
        dtype = getattr(torch, self._settings["dtype"])
        cos, sin = self._model.model.rotary_emb(torch.zeros(1, dtype=dtype, device=self._device), positions)
        cos, sin = cos[0], sin[0]  # (capacity, head_dim), computed in fp32 and cast as the HF forward does
        mode = self._settings["compile_mode"]
        backend = self._settings["attn_backend"]
        for batch in self._settings["batch_sizes"]:
            decoder = StaticDecoder(
                self._model, batch, self._capacity, cos, sin, sdpa_backends(backend), repeats_kv(backend)
            ).to(self._device)
            step = prefill = decoder
            if mode != "none":
                step = compile_step(decoder, mode, self._settings["compile_tuning"])
                if self._prefill_lengths():
                    # Prefill graphs are plain inductor: capturing a CUDA graph per length buys little once.
                    prefill = torch.compile(decoder, mode="default", fullgraph=True, dynamic=False)
            slot = self._slots[batch] = _Slot(decoder, step, prefill, self._prefill_lengths())
            # Called as `generate` calls them: distinct position and `last` tensors (aliased inputs would be
            # guarded on, and the first request would compile again).
            first, second = self._positions[0], self._positions[1]
            self._timed(f"decode b{batch}", slot.step, torch.zeros((batch, 1), dtype=torch.long), second, first)
            for length in slot.lengths:
                ids = torch.zeros((batch, length), dtype=torch.long)
                self._timed(f"prefill b{batch} len{length}", slot.prefill, ids, positions[0, :length], first)

    def _timed(self, label: str, fn: Any, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor) -> None:
        start = time.perf_counter()
        for _ in range(3 if self._graphs else 1):  # cudagraph trees record on the call after warm-up
            self._call(fn, ids.to(self._device), positions, last)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self.compile_report[label] = time.perf_counter() - start

    def _call(self, fn: Any, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        if self._graphs:
            torch.compiler.cudagraph_mark_step_begin()
            return fn(ids, positions, last).clone()  # the graph's output buffer is reused by the next replay
        return fn(ids, positions, last)

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """`torch_compiled_runtime.json`: every setting `load` applies (see `runtime_settings`)."""
        settings = runtime_settings(candidate, runtime)
        (Path(folder) / RUNTIME_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def plain_runtime_snippet(cls) -> str:
        return _SNIPPET

    def _slot(self, batch: int) -> _Slot:
        for size, slot in sorted(self._slots.items()):
            if size >= batch:
                return slot
        raise ValueError(
            f"batch {batch} is larger than this engine's static cache (max_batch={max(self._slots)}); "
            "load it with a larger RuntimeOptions.max_batch"
        )

    @torch.inference_mode()
    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        batch, prompt_len = input_ids.shape
        if prompt_len + max_new_tokens - 1 > self._capacity:
            raise ValueError(
                f"prompt {prompt_len} + {max_new_tokens} new tokens needs {prompt_len + max_new_tokens - 1} cache "
                f"positions; this engine's static cache holds {self._capacity}: load it with a larger max_length"
            )
        slot = self._slot(batch)
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
        rows = slot.decoder.k0.shape[0]
        if rows > batch:  # pad with copies of row 0: real values, never read back
            ids = torch.cat([ids, ids[:1].expand(rows - batch, -1)])
        last = self._positions[prompt_len - 1]
        length = next((n for n in slot.lengths if n >= prompt_len), None)
        if length is None:  # eager prefill at the prompt's own length
            token = slot.decoder(ids.to(self._device), torch.arange(prompt_len, device=self._device), last)
        else:
            padded = F.pad(ids, (0, length - prompt_len)).to(self._device)
            token = slot.prefill(padded, torch.arange(length, device=self._device), last)
        yield token[:batch].cpu().numpy()
        for position in range(prompt_len, prompt_len + max_new_tokens - 1):
            token = self._call(slot.step, token[:, None], self._positions[position], self._positions[0])
            yield token[:batch].cpu().numpy()

    @torch.inference_mode()
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Teacher-forced through the HF forward over the same (quantized) weights the loop uses, under the same
        SDPA backend. Under a backend that takes no `enable_gqa` it passes an explicit causal mask: transformers
        then repeats the KV heads instead of asking SDPA for grouped-query attention."""
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        return hf_logits(self._model, ids, self._settings["attn_backend"]).cpu().numpy()

    def device_peak_memory_bytes(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self._device))

    def static_kv_allocations(self) -> int | None:
        return len(self._slots)  # all allocated by load, one per batch size; requests only rewind them

    def close(self) -> None:
        self._slots.clear()
        del self._model


def _require_fp8_card(device: torch.device) -> None:
    """float8 `_scaled_mm` needs compute capability 8.9 (Ada) or later."""
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        card = torch.cuda.get_device_name(device)
        raise RuntimeError(
            f"quant=fp8 needs a card of compute capability 8.9 or later (float8 matmul); this {card} is "
            f"{major}.{minor}: use int8_weight or bf16, or a target without fp8 in target.precisions"
        )


def _fx_cache_counts() -> dict[str, int]:
    """torch's running cache counters: a graph comes from AOTAutograd's cache or from inductor's FX-graph cache
    (a hit in either), or is compiled by inductor (an FX-graph miss) or cannot be cached (a bypass)."""
    counters = torch._dynamo.utils.counters
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return {
        "hit": int(inductor["fxgraph_cache_hit"] + aot["autograd_cache_hit"]),
        "miss": int(inductor["fxgraph_cache_miss"]),
        "bypass": int(inductor["fxgraph_cache_bypass"]),
    }


def _cudagraph_skips() -> int:
    return int(torch._dynamo.utils.counters["inductor"]["cudagraph_skips"])


def _compile_cache(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """The on-disk compile caches during one load: their directory (TORCHINDUCTOR_CACHE_DIR, or torch's
    default) and how many lookups they served (hits), compiled and stored (misses) or could not cache."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    delta = {key: after[key] - before[key] for key in after}
    return {"dir": cache_dir(), "hits": delta["hit"], "misses": delta["miss"], "bypasses": delta["bypass"]}


def _raise_recompile_limit(graphs: int) -> None:
    """Every batch size and prefill length is its own graph of the one `StaticDecoder.forward`; dynamo's
    default limit (8 per code object) would silently fall back to eager beyond that."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, graphs + 2)

