"""Eager transformers behind the engine contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions

_DTYPES = {"none": torch.float32, "int8_dynamic": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, kv_cache: str, max_length: int):
        self._model = model
        self._device = device
        self._kv_cache = kv_cache
        self._max_length = max_length

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> TorchEngine:
        if runtime.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("engine torch on device cuda needs a CUDA build of torch and a CUDA device; none found")
        torch.set_num_threads(runtime.threads)
        device = torch.device(runtime.device)
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=_DTYPES[candidate.quant])
        model.eval()
        if candidate.quant == "int8_dynamic":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        model.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return cls(model, device, candidate.kv_cache, runtime.max_length)

    def _cache(self) -> DynamicCache | StaticCache:
        if self._kv_cache == "static":
            return StaticCache(config=self._model.config, max_cache_len=self._max_length)
        return DynamicCache(config=self._model.config)

    @torch.inference_mode()
    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        cache = self._cache()
        position = torch.arange(ids.shape[1], device=self._device)
        for _ in range(max_new_tokens):
            out = self._model(
                input_ids=ids, cache=cache, cache_position=position, use_cache=True, logits_to_keep=1
            )
            ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            position = position[-1:] + 1
            yield ids[:, 0].cpu().numpy()

    @torch.inference_mode()
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        return self._model(input_ids=ids, use_cache=False).logits.float().cpu().numpy()

    def device_peak_memory_bytes(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self._device))

    def close(self) -> None:
        del self._model
