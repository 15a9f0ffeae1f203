"""Eager transformers behind the engine contract."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

from autoopt.artifacts import TORCH_RUNTIME as RUNTIME_FILE
from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions, left_aligned, warn_if_written_differs
from autoopt.engines.sampling import RowSampler, Sampling, drawing, pick, row_samplers
from autoopt.engines.stream import KVOps, PaddedStream
from autoopt.engines.torch import INFO
from autoopt.engines.torch.attention import hf_logits, sdpa_context
from autoopt.models.forward import cache_keyword

_DTYPES = {"none": torch.float32, "int8_dynamic": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_HF_CONFIG = "config.json"
_GENERATION_CONFIG = "generation_config.json"

_SNIPPET = '''\
import inspect
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

# The knob `attn_backend`: the only SDPA kernel allowed ("auto": SDPA picks).
SDPA = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION}


def load(folder):
    """The model with the dtype, threads, quantization, attention kernel and KV cache it was measured with."""
    settings = json.loads((Path(folder) / "torch_runtime.json").read_text())
    torch.set_num_threads(settings["threads"])
    backend = SDPA.get(settings.get("attn_backend", "auto"))
    extra = {"attn_implementation": "sdpa"} if backend is not None else {}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, settings["dtype"]), **extra).eval()
    if settings["quantize_dynamic_int8"]:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.to(settings["device"])
    # A static cache is allocated once and reset per request.
    static = None
    if settings["kv_cache"] == "static":
        static = StaticCache(config=model.config, max_cache_len=settings["max_length"])
    return model, static, backend


@torch.inference_mode()
def generate(loaded, prompt_ids, max_new_tokens):
    """Greedy token ids, one per step; stops early at end of text."""
    model, static, backend = loaded
    if static is not None:
        static.reset()
    cache = static if static is not None else DynamicCache(config=model.config)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    ids = torch.tensor([prompt_ids], device=model.device)
    # transformers renamed the forward's `past_key_values` to `cache`; the wrong name is silently ignored
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    for _ in range(max_new_tokens):
        with sdpa_kernel(backend) if backend is not None else nullcontext():
            logits = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{keyword: cache}).logits
        ids = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        token = int(ids[0, 0])
        yield token
        if token in eos:
            return


if __name__ == "__main__":
    loaded = load("model")
    print(list(generate(loaded, [1, 2, 3], 32)))
'''


def runtime_settings(candidate: CandidateConfig, runtime: RuntimeOptions) -> dict[str, Any]:
    """Every setting `TorchEngine.load` applies, as written to `torch_runtime.json`: the one source."""
    return {
        "dtype": str(_DTYPES[candidate.quant]).removeprefix("torch."),
        "quantize_dynamic_int8": candidate.quant == "int8_dynamic",
        "threads": runtime.threads,
        "device": runtime.device,
        "kv_cache": candidate.kv_cache,
        "max_length": runtime.max_length,
        "attn_backend": candidate.attn_backend,
    }


# What autoopt measures and decodes with: the argmax at every step.
_GREEDY = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p")


class TorchEngine(Engine):
    name = "torch"
    samples = INFO.samples

    def __init__(self, model: torch.nn.Module, device: torch.device, kv_cache: str, max_length: int,
                 attn_backend: str = "auto"):
        self._model = model
        self._attn_backend = attn_backend
        self._device = device
        self._kv_cache = kv_cache
        self._max_length = max_length
        self._static: dict[int, StaticCache] = {}  # one per batch size, reset per request
        self._static_length: dict[int, int] = {}  # positions each of those holds
        self._allocations = 0
        self._cache_keyword = cache_keyword(model)
        # Padding needs an attention mask, which cuda's FlashAttention kernel does not take.
        self.mixed_lengths = not (device.type == "cuda" and attn_backend == "flash")
        # A stream reshapes its rows' caches between steps: a static cache is one fixed buffer per batch size, and a
        # sliding-window layer keeps fewer positions than the rows' shared mask covers.
        sliding = any(layer.is_sliding for layer in DynamicCache(config=model.config).layers)
        self.continuous = self.mixed_lengths and kv_cache != "static" and not sliding

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> TorchEngine:
        if runtime.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("engine torch on device cuda needs a CUDA build of torch and a CUDA device; none found")
        settings = runtime_settings(candidate, runtime)
        warn_if_written_differs("torch", Path(artifact) / RUNTIME_FILE, settings)
        torch.set_num_threads(settings["threads"])
        device = torch.device(settings["device"])
        # A named attention backend needs HF's SDPA attention (transformers' default, but a model's config may pick
        # another); `auto` loads the model exactly as the reference does.
        extra = {"attn_implementation": "sdpa"} if settings["attn_backend"] != "auto" else {}
        model, info = AutoModelForCausalLM.from_pretrained(
            artifact, dtype=getattr(torch, settings["dtype"]), output_loading_info=True, **extra
        )
        if missing := sorted(info["missing_keys"]):
            # transformers fills them with random values and says so only in a log line
            raise ConfigError(f"{artifact} lacks weights the model needs ({', '.join(missing[:4])}"
                              f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}); transformers would "
                              "fill them with random values, so every figure measured from it would be noise")
        model.eval()
        if settings["quantize_dynamic_int8"]:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        model.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return cls(model, device, settings["kv_cache"], settings["max_length"], settings["attn_backend"])

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """`torch_runtime.json` (threads, dtype, dynamic int8, device, KV layout, static cache length), plus
        transformers' own files: `config.json` `dtype` (what `dtype="auto"` loads) and `generation_config.json`
        (what `model.generate` uses): `cache_implementation`, and greedy decoding as measured, without the
        checkpoint's repetition penalty or sampling settings."""
        folder = Path(folder)
        settings = runtime_settings(candidate, runtime)
        (folder / RUNTIME_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        config = json.loads((folder / _HF_CONFIG).read_text())
        config["dtype"] = settings["dtype"]
        (folder / _HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        generation_path = folder / _GENERATION_CONFIG
        generation = json.loads(generation_path.read_text()) if generation_path.exists() else {}
        for key in _SAMPLING_KEYS:  # a checkpoint's sampling defaults; `generate` warns about them under greedy
            generation.pop(key, None)
        generation.update(_GREEDY)
        if settings["kv_cache"] == "static":
            generation["cache_implementation"] = "static"
        else:
            generation.pop("cache_implementation", None)
        generation_path.write_text(json.dumps(generation, indent=2) + "\n")

    @classmethod
    def plain_runtime_snippet(cls) -> str:
        return _SNIPPET

    def _cache(self, batch: int, length: int) -> DynamicCache | StaticCache:
        if self._kv_cache != "static":
            return DynamicCache(config=self._model.config)
        cache = self._static.get(batch)
        if cache is not None and self._static_length[batch] >= length:
            cache.reset()  # zeroes the buffers in place and rewinds the position
            return cache
        # Sized once for the longest request (a longer one than `max_length` gets a larger cache). Its
        # tensors are allocated by the first forward (StaticLayer.lazy_initialization) at the model's
        # dtype and device.
        capacity = max(length, self._max_length)
        cache = self._static[batch] = StaticCache(config=self._model.config, max_cache_len=capacity)
        self._static_length[batch] = capacity
        self._allocations += 1
        return cache

    @torch.inference_mode()
    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: Sequence[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        samplers = row_samplers(self.name, self.samples, sampling, input_ids.shape[0])
        padded = {}
        if prompt_lengths is not None:
            input_ids, mask = left_aligned(input_ids, prompt_lengths)
            mask = torch.from_numpy(mask).to(self._device)
            padded = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        cache = self._cache(ids.shape[0], ids.shape[1] + max_new_tokens)
        for _ in range(max_new_tokens):
            with sdpa_context(self._attn_backend):
                out = self._model(
                    input_ids=ids, use_cache=True, logits_to_keep=1, **padded, **{self._cache_keyword: cache}
                )
            if drawing(samplers):
                tokens = _pick(out.logits[:, -1, :], samplers)
                ids = torch.from_numpy(tokens[:, None]).to(self._device)
            else:  # the measured path: the next step's ids stay on the device
                ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                tokens = ids[:, 0].cpu().numpy()
            yield tokens
            if padded:
                mask = padded["attention_mask"]
                padded = {"attention_mask": torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1),
                          "position_ids": padded["position_ids"][:, -1:] + 1}

    def stream(self) -> TorchStream:
        if not self.continuous:
            return super().stream()
        return TorchStream(self)

    @torch.inference_mode()
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        return hf_logits(self._model, ids, self._attn_backend).cpu().numpy()

    def device_peak_memory_bytes(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self._device))

    def static_kv_allocations(self) -> int | None:
        return self._allocations if self._kv_cache == "static" else None

    def close(self) -> None:
        self._static.clear()
        del self._model


class _TorchKV(KVOps[torch.Tensor]):
    def pad_left(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0, n, 0))

    def cat(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs)

    def take(self, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return x[rows]


class TorchStream(PaddedStream):
    """Continuous batching on `TorchEngine` (dynamic KV cache): each row's positions count its context only."""

    def __init__(self, engine: TorchEngine) -> None:
        super().__init__(_TorchKV(), engine.name, engine.samples)
        self._engine = engine
        self._cache = DynamicCache(config=engine._model.config)  # holds exactly `self._held` after a step
        self._held: list[torch.Tensor] = []

    @torch.inference_mode()
    def _forward(self, ids: np.ndarray, cache: DynamicCache, samplers: list[RowSampler | None],
                 **padded: torch.Tensor) -> np.ndarray:
        e = self._engine
        with sdpa_context(e._attn_backend):
            out = e._model(input_ids=torch.from_numpy(ids).to(e._device), use_cache=True, logits_to_keep=1,
                           **padded, **{e._cache_keyword: cache})
        return _pick(out.logits[:, -1, :], samplers)

    def _prefill(self, prompt_ids: np.ndarray, past: list[torch.Tensor] | None,
                 sampler: RowSampler | None) -> tuple[int, list[torch.Tensor]]:
        cache = self._cache_of(past or [])  # positions continue from its length (no padding in a row alone)
        tokens = self._forward(prompt_ids, cache, [sampler])
        return int(tokens[0]), _tensors(cache)

    def _cache_of(self, kv: list[torch.Tensor]) -> DynamicCache:
        config = self._engine._model.config
        if not kv:
            return DynamicCache(config=config)
        return DynamicCache(ddp_cache_data=list(zip(kv[0::2], kv[1::2], strict=True)), config=config)

    def _decode(self, tokens: np.ndarray, kv: list[torch.Tensor], mask: np.ndarray,
                samplers: list[RowSampler | None]) -> tuple[np.ndarray, list]:
        if len(kv) != len(self._held) or any(a is not b for a, b in zip(kv, self._held, strict=False)):
            # rows joined or left since the last step: their tensors go into a new cache (copied once, not per step)
            self._cache = self._cache_of(kv)
        attention = torch.from_numpy(mask).to(self._engine._device)
        positions = attention[:, :-1].sum(dim=-1, keepdim=True)
        out = self._forward(tokens, self._cache, samplers, attention_mask=attention, position_ids=positions)
        self._held = _tensors(self._cache)
        return out, self._held


def _pick(logits: torch.Tensor, samplers: list[RowSampler | None]) -> np.ndarray:
    """The rows' next tokens from their last logits (rows, vocab): the argmax on the device, and draws from the
    sampling rows' logits, copied to the host for those rows alone."""
    return pick(logits.argmax(dim=-1).cpu().numpy(), samplers, lambda rows: logits[rows].float().cpu().numpy())


def _tensors(cache: DynamicCache) -> list[torch.Tensor]:
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]
