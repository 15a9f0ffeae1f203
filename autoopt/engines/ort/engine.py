"""onnxruntime behind the engine contract: one decoder-with-past graph for prefill and decode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.passes.onnx_files import MODEL_FILE

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
Cache = np.ndarray | ort.OrtValue  # one KV tensor: host array, or an ORT value left on the device


class OrtEngine(Engine):
    """On CPU each step is a plain `run` with numpy in and out (IO binding measured no faster there).
    On a device the KV tensors stay on it: they are bound as ORT values from one step to the next, and
    only the logits come back to the host, where the argmax runs."""

    name = "ort"
    install_hint: ClassVar[str] = "onnxruntime-gpu (pip install 'autoopt[gpu]')"

    def __init__(self, session: ort.InferenceSession, device: str, bind_io: bool):
        self._session = session
        self._device = device
        self._bind_io = bind_io
        inputs = session.get_inputs()
        self._past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
        self._present_names = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
        past = inputs[2]
        self._kv_heads, self._head_dim = past.shape[1], past.shape[3]
        self._kv_dtype = _ORT_TYPES[past.type]

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> OrtEngine:
        if candidate.graph_opt not in _GRAPH_OPT:
            raise ValueError(
                f"candidate.graph_opt={candidate.graph_opt!r} is not an ORT level; choose one of: "
                f"{', '.join(_GRAPH_OPT)}"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = _GRAPH_OPT[candidate.graph_opt]
        options.intra_op_num_threads = runtime.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = cls.providers(artifact, runtime)
        session = ort.InferenceSession(str(artifact / MODEL_FILE), options, providers=providers)
        return cls(session, runtime.device, bind_io=runtime.device != "cpu")

    @classmethod
    def providers(cls, artifact: Path, runtime: RuntimeOptions) -> list[str | tuple[str, dict[str, str]]]:
        """Execution providers in priority order; refuses a device whose provider this build lacks."""
        if runtime.device == "cpu":
            return ["CPUExecutionProvider"]
        cls._require_provider("CUDAExecutionProvider", runtime.device)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    @classmethod
    def _require_provider(cls, provider: str, device: str) -> None:
        available = ort.get_available_providers()
        if provider not in available:
            raise RuntimeError(
                f"engine {cls.name} on device {device} needs {cls.install_hint} and a CUDA device; "
                f"found providers: {', '.join(available)}"
            )

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        past, past_len = self._empty_past(ids.shape[0]), 0
        for _ in range(max_new_tokens):
            logits, past = self._run(ids, past, past_len)
            past_len += ids.shape[1]
            token = logits[:, -1, :].argmax(axis=-1)
            yield token
            ids = token[:, None]

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        logits, _ = self._run(ids, self._empty_past(ids.shape[0]), 0)
        return logits.astype(np.float32, copy=False)

    def _empty_past(self, batch: int) -> list[np.ndarray]:
        empty = np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
        return [empty] * len(self._past_names)

    def _run(self, ids: np.ndarray, past: list[Cache], past_len: int) -> tuple[np.ndarray, list[Cache]]:
        """One step: `ids` (batch, new) after `past_len` cached positions → host logits, new cache."""
        mask = np.ones((ids.shape[0], past_len + ids.shape[1]), dtype=np.int64)
        if not self._bind_io:
            logits, *present = self._session.run(
                ["logits", *self._present_names],
                {"input_ids": ids, "attention_mask": mask, **dict(zip(self._past_names, past, strict=True))},
            )
            return logits, present
        binding = self._session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        for name, value in zip(self._past_names, past, strict=True):
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), present

    def close(self) -> None:
        del self._session
