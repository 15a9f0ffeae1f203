"""onnxruntime behind the engine contract: one decoder-with-past graph for prefill and decode."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from autoopt.artifacts import ONNX_MODEL as MODEL_FILE
from autoopt.artifacts import ORT_SESSION as SESSION_FILE
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions, left_aligned, warn_if_written_differs
from autoopt.engines.graph_levels import ORT_GRAPH_LEVELS
from autoopt.engines.info import autoopt_install
from autoopt.engines.ort import INFO
from autoopt.engines.probes import CPU_BUILDS_OUT
from autoopt.engines.sampling import RowSampler, Sampling, pick, row_samplers
from autoopt.engines.stream import NumpyKV, PaddedStream
from autoopt.models.rope import Rope, rope_of

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
Cache = np.ndarray | ort.OrtValue  # one KV tensor: host array, or an ORT value left on the device

_SNIPPET = '''\
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load(folder):
    """The session with the options and providers it was measured with (folder/ort_session.json)."""
    settings = json.loads((Path(folder) / "ort_session.json").read_text())
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
    providers = [p if isinstance(p, str) else tuple(p) for p in settings["providers"]]
    session = ort.InferenceSession(str(Path(folder) / settings["model_file"]), options, providers=providers)
    return session, set(settings["eos_token_ids"])


def generate(loaded, prompt_ids, max_new_tokens):
    """Greedy token ids, one per step; stops early at end of text. numpy in and out: on a GPU this copies the KV
    cache through the host every step, which autoopt's engine does not (it keeps it on the device with an
    IOBinding), so there it gives the same tokens but not the measured speed."""
    session, eos = loaded
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    presents = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    _, heads, _, head_dim = pasts[0].shape
    dtype = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    past = [np.zeros((1, heads, 0, head_dim), dtype) for _ in pasts]
    ids = np.array([prompt_ids], dtype=np.int64)
    length = 0
    for _ in range(max_new_tokens):
        length += ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64)}
        feed.update({p.name: value for p, value in zip(pasts, past)})
        logits, *past = session.run(["logits", *presents], feed)
        token = int(logits[0, -1].argmax())
        yield token
        if token in eos:
            return
        ids = np.array([[token]], dtype=np.int64)


if __name__ == "__main__":
    loaded = load("model")
    print(list(generate(loaded, [1, 2, 3], 32)))
'''


class OrtEngine(Engine):
    """On CPU each step is a plain `run` with numpy in and out (IO binding measured no faster there).
    On a device the KV tensors stay on it: they are bound as ORT values from one step to the next, and
    only the logits come back to the host, where the argmax runs (the plain snippet of a bundle runs
    numpy in and out, which on a device copies the KV each step: it reproduces CPU figures only)."""

    name = "ort"
    mixed_lengths = True
    samples = INFO.samples
    install_hint: ClassVar[str] = f"onnxruntime-gpu ({CPU_BUILDS_OUT}, then {autoopt_install('gpu')})"

    def __init__(self, session: ort.InferenceSession, device: str, bind_io: bool, rope: Rope | str):
        self._session = session
        self._device = device
        self._bind_io = bind_io
        self._rope = rope  # how to move cached keys to other positions, or why they cannot be moved
        # on a device the KV stays there between steps, as ORT values the stream's array operations do not take
        self.continuous = not bind_io and isinstance(rope, Rope)
        inputs = session.get_inputs()
        self._past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
        self._present_names = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
        past = inputs[2]
        self._kv_heads, self._head_dim = past.shape[1], past.shape[3]
        self._kv_dtype = _ORT_TYPES[past.type]

    @classmethod
    def session_settings(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> dict[str, Any]:
        """Every session setting `load` applies, as written to `ort_session.json`: the one source of both."""
        if candidate.graph_opt not in ORT_GRAPH_LEVELS:
            raise ValueError(
                f"candidate.graph_opt={candidate.graph_opt!r} is not an ORT level; choose one of: "
                f"{', '.join(ORT_GRAPH_LEVELS)}"
            )
        return {
            "model_file": MODEL_FILE,
            "graph_optimization_level": ORT_GRAPH_LEVELS[candidate.graph_opt],
            "intra_op_num_threads": runtime.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "ORT_SEQUENTIAL",
            "providers": [p if isinstance(p, str) else list(p) for p in cls.providers(artifact, runtime)],
        }

    @classmethod
    def load(
        cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions, *, profile_prefix: str | None = None
    ) -> OrtEngine:
        """`profile_prefix` (autoopt.bench.profile only, never for timed runs): ONNX Runtime's own profiling,
        written to `<profile_prefix>_<timestamp>.json` when the session is released (`close`)."""
        settings = cls.session_settings(artifact, candidate, runtime)
        warn_if_written_differs(cls.name, Path(artifact) / SESSION_FILE, settings)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
        options.intra_op_num_threads = settings["intra_op_num_threads"]
        options.inter_op_num_threads = settings["inter_op_num_threads"]
        options.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
        # --- profiling hook (autoopt.bench.profile) ---
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        # --- end profiling hook ---
        providers = [p if isinstance(p, str) else tuple(p) for p in settings["providers"]]
        session = ort.InferenceSession(str(artifact / settings["model_file"]), options, providers=providers)
        config = Path(artifact) / "config.json"
        rope = rope_of(json.loads(config.read_text())) if config.is_file() else "the artifact has no config.json"
        return cls(session, runtime.device, bind_io=runtime.device != "cpu", rope=rope)

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """`ort_session.json` beside the graph: session options and providers as `load` applies them, plus
        the end-of-text ids (from the folder's `generation_config.json` or `config.json`) the snippet
        stops at."""
        folder = Path(folder)
        settings = cls.session_settings(folder, candidate, runtime)
        settings["eos_token_ids"] = _eos_token_ids(folder)
        (folder / SESSION_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def plain_runtime_snippet(cls) -> str:
        return _SNIPPET

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

    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: Sequence[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        samplers = row_samplers(self.name, self.samples, sampling, input_ids.shape[0])
        mask = np.ones(input_ids.shape, dtype=np.int64)
        if prompt_lengths is not None:
            input_ids, mask = left_aligned(input_ids, prompt_lengths)
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        past = self._empty_past(ids.shape[0])
        for _ in range(max_new_tokens):
            logits, past = self._run(ids, past, mask)
            token = _pick(logits[:, -1, :], samplers)
            yield token
            ids = token[:, None]
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)

    def stream(self) -> OrtStream:
        if self._bind_io or not isinstance(self._rope, Rope):
            why = "it runs on a device" if self._bind_io else self._rope
            raise NotImplementedError(f"engine {self.name} as loaded has no continuous batching: {why}")
        return OrtStream(self, self._rope)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        logits, _ = self._run(ids, self._empty_past(ids.shape[0]), np.ones(ids.shape, dtype=np.int64))
        return logits.astype(np.float32, copy=False)

    def device_peak_memory_bytes(self) -> int | None:
        """None, always. onnxruntime's Python API has no allocator statistics (the C API's
        `AllocatorGetStats` is not bound); `torch.cuda` counters do not see ORT's CUDA arena; NVML reports
        a whole process (CUDA context and every library in it), current not peak, and per-process figures
        are often missing inside containers. No figure here is more honest than a wrong one."""
        return None

    def _empty_past(self, batch: int) -> list[np.ndarray]:
        empty = np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
        return [empty] * len(self._past_names)

    def _run(self, ids: np.ndarray, past: list[Cache], mask: np.ndarray) -> tuple[np.ndarray, list[Cache]]:
        """One step: `ids` (batch, new) after the cached positions, `mask` (batch, cached + new; 0 = padding)
        → host logits, new cache."""
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


class OrtStream(PaddedStream):
    """Continuous batching on `OrtEngine` (host arrays). The graph positions every cache column, so when columns
    are added before or cut from the rows' contexts, their cached keys move with them (`Rope.moved`)."""

    def __init__(self, engine: OrtEngine, rope: Rope) -> None:
        super().__init__(NumpyKV(), engine.name, engine.samples)
        self._engine, self._rope = engine, rope
        self._is_key = [name.endswith(".key") for name in engine._present_names]

    def _prefill(self, prompt_ids: np.ndarray, past: list[np.ndarray] | None,
                 sampler: RowSampler | None) -> tuple[int, list[np.ndarray]]:
        e = self._engine
        past = e._empty_past(1) if past is None else past
        mask = np.ones((1, past[0].shape[2] + prompt_ids.shape[1]), dtype=np.int64)
        logits, present = e._run(prompt_ids, past, mask)
        return int(_pick(logits[:, -1, :], [sampler])[0]), present

    def _decode(self, tokens: np.ndarray, kv: list[np.ndarray], mask: np.ndarray,
                samplers: list[RowSampler | None]) -> tuple[np.ndarray, list]:
        logits, present = self._engine._run(np.ascontiguousarray(tokens), kv, mask)
        return _pick(logits[:, -1, :], samplers), present

    def _repositioned(self, kv: list[np.ndarray], n: int) -> list[np.ndarray]:
        return [self._rope.moved(x, n) if key else x for x, key in zip(kv, self._is_key, strict=True)]


def _pick(last: np.ndarray, samplers: list[RowSampler | None]) -> np.ndarray:
    """The rows' next tokens from their last host logits (rows, vocab)."""
    return pick(last.argmax(axis=-1), samplers, lambda rows: last[rows])


def _eos_token_ids(folder: Path) -> list[int]:
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.exists():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return list(eos) if isinstance(eos, list) else [int(eos)]
    return []

