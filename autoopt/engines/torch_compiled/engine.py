"""A gpt-fast-style decode loop behind the engine contract: greedy, or drawing the rows that sample from the logits
the step returns beside its argmax.

The HF model is loaded with its eager modules; autoopt drives them with its own forward over a KV cache
preallocated once per batch size (`max_batch x max_length`), so every decode step has the same shapes:
tokens (batch, 1), the cache position as a (1,) tensor, the whole cache behind a boolean mask. That step is
compiled with `torch.compile` at load (`compile_mode`): `default` is inductor; `reduce-overhead` adds CUDA
graphs on cuda, and on the CPU behaves like `default` (inductor has no CPU graphs to capture; there it writes
each graph's wrapper in C++, see `compile_options`); `none` runs the same loop eagerly. Prefill runs apart:
eagerly at the prompt's own length (`prefill_bucket=0`), or compiled once per bucketed length, the prompt
right-padded to it (padded positions write cache slots that decode overwrites before it ever attends to them;
causality keeps them out of the real positions).

Nothing compiles inside a request: every graph (each batch size, each prefill bucket) is built and run
once by `load`, which records how long that took (`compile_seconds()`, `compile_report`) and whether
inductor's on-disk cache already held entries (`compile_cache_warm()`: a warm cache shortens compiles, so
a short compile time is read with it). Set `TORCHINDUCTOR_CACHE_DIR` in the environment the process starts
with (`inductor_cache_env`) to keep that cache under autoopt's.

`attn_backend` restricts SDPA to one kernel (`torch.nn.attention.sdpa_kernel`, entered inside the compiled
step so that dynamo traces it); under `efficient`/`cudnn` the grouped KV heads are repeated to one per query
head first (torch documents `enable_gqa` for flash and math only on cuda), and the teacher-forced HF forward
gets an explicit causal mask, so that transformers repeats them too.

The step itself is `decoder.StaticDecoder`. Each layer's q/k/v and gate/up projections run as one matmul
each (`fuse.py`), fused before quantizing. Weight-only int8/int4 and float8 (`quant.py`) use core torch
kernels only, with bf16 activations (torch 2.13's CPU kernels take fp32 activations too, but through an
unvectorized path that was 65-110x slower than an fp32 matmul on a 128-token prefill here), `lm_head` kept
int8 under an int4 body. Each quant's cuda path ran on an H200 with torch 2.11 (tests/gpu;
experiments/2026-11-27-h200-compiled-decode.md, experiments/2026-11-29-h200-second-run.md).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM

from autoopt.config.errors import ConfigError
from autoopt.config.knobs import knobs_of
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions, left_aligned, warn_if_written_differs
from autoopt.engines.sampling import RowSampler, Sampling, drawing, pick, row_samplers
from autoopt.engines.torch.attention import attn_backend_problem, hf_logits, repeats_kv, sdpa_backends
from autoopt.engines.torch_compiled import INFO, INT4_GROUPS, compile_tuning_problem
from autoopt.engines.torch_compiled.decoder import StaticDecoder, check_architecture
from autoopt.engines.torch_compiled.fuse import fuse_projections
from autoopt.engines.torch_compiled.quant import quantize_weights
from autoopt.engines.torch_compiled.shipped import SHIPPED_DIR, install_shipped_graphs, ship_compiled_graphs
from autoopt.engines.torch_compiled.stream import TorchCompiledStream

log = logging.getLogger("autoopt.engines")

RUNTIME_FILE = "torch_compiled_runtime.json"
_KNOBS = knobs_of(CandidateConfig)
_FLOAT = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}

_SNIPPET = '''\
# The compiled decode loop is autoopt's own code (a static-cache forward over the HF modules, compiled with
# torch.compile); there is no plain-transformers equivalent that reproduces its speed. This runs it from the
# bundle's folder with the settings it was measured with (torch_compiled_runtime.json), compiling at load.
from pathlib import Path

import numpy as np

from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, load_settings


def load(folder):
    candidate, runtime = load_settings(Path(folder))
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
    for name in ("compile_mode", "compile_tuning", "prefill_bucket"):
        if problem := _KNOBS[name].value_problem(getattr(candidate, name)):
            raise ConfigError(problem)
    mode = candidate.compile_mode
    bucket = candidate.prefill_bucket
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
        "cpp_wrapper": runtime.device == "cpu",  # see compile_options; on cuda not run yet
        "prefill_bucket": bucket,
        "attn_backend": candidate.attn_backend,
        "threads": runtime.threads,
        "device": runtime.device,
        "max_length": runtime.max_length,
        # One cache and one decode graph per size; a request of another size runs padded to the next one up.
        "batch_sizes": sorted({min(runtime.batch_size, runtime.max_batch), runtime.max_batch}),
    }


def load_settings(folder: Path) -> tuple[CandidateConfig, RuntimeOptions]:
    """The candidate and runtime options a folder's `torch_compiled_runtime.json` was written from."""
    s = json.loads((Path(folder) / RUNTIME_FILE).read_text())
    candidate = CandidateConfig(engine="torch_compiled", quant=s["quant"], compile_mode=s["compile_mode"],
                                prefill_bucket=s["prefill_bucket"],
                                # absent from bundles written before these knobs existed: their defaults then
                                compile_tuning=s.get("compile_tuning", "none"),
                                attn_backend=s.get("attn_backend", "auto"))
    if s["group_size"] is not None:
        candidate.quant_block_size = s["group_size"]
    runtime = RuntimeOptions(device=s["device"], threads=s["threads"], max_length=s["max_length"],
                             max_batch=max(s["batch_sizes"]), batch_size=min(s["batch_sizes"]))
    return candidate, runtime


def cuda_int8_note(settings: dict[str, Any]) -> str | None:
    """Why a compiled step's int8 matmuls on cuda will run in aten's `_weight_int8pack_mm`, or None.

    inductor's post-grad pass replaces `mm(x, w_int8.to(bf16)) * scales` with that kernel on cuda as on the CPU
    (`torch/_inductor/fx_passes/quantization.py`); on cuda it is a plain kernel that took 87 % of an H200's busy
    time for int8_weight on the 0.5B shape. Under coordinate_descent, inductor's `mm` decomposition first turns a
    matmul of statically one row into a reduction that reads the int8 weight itself (7.4x faster per token there),
    so a decode graph of more rows, and every prefill graph (compiled untuned), still match the pattern (from
    torch's source; not measured on a card). experiments/2026-11-29-h200-second-run.md."""
    quant = settings["quant"]
    if settings["device"] != "cuda" or quant not in ("int8_weight", "int4") or settings["compile_mode"] == "none":
        return None
    held = "its int8 weights" if quant == "int8_weight" else "its int8 layers (lm_head, and any int4 cannot take)"
    if settings["compile_tuning"] == "none":
        return (f"{held} run in aten's _weight_int8pack_mm, which inductor puts in place of the cast and matmul; "
                "compile_tuning=coordinate_descent fuses them (7.4x faster per token for int8_weight on an H200)")
    graphs = []
    if rows := [b for b in settings["batch_sizes"] if b > 1]:
        graphs.append(f"decode graphs of {', '.join(map(str, rows))} rows")
    if settings["prefill_bucket"]:
        graphs.append("prefill graphs (compiled untuned)")
    if graphs:
        return (f"the {' and the '.join(graphs)} keep {held} in aten's _weight_int8pack_mm: coordinate_descent "
                "fuses the cast into one-row matmuls only")
    return None


def compile_step(decoder: nn.Module, mode: str, tuning: str, cpp_wrapper: bool) -> Any:
    """`decoder` compiled with `mode`, `tuning` and `cpp_wrapper` (see `compile_options`)."""
    options = compile_options(mode, tuning, cpp_wrapper)
    if options is None:
        return torch.compile(decoder, mode=mode, fullgraph=True, dynamic=False)
    return torch.compile(decoder, options=options, fullgraph=True, dynamic=False)


def compile_options(mode: str, tuning: str, cpp_wrapper: bool) -> dict[str, Any] | None:
    """inductor's options for `mode` under `tuning`, with or without `cpp_wrapper`; None: `mode` alone says it all.

    `cpp_wrapper` is set on the CPU (`runtime_settings`). There inductor then writes the code that calls the
    graph's kernels in turn in C++ rather than Python, which pays where a batch-1 step of a small model launches
    many short kernels: the built-in model decoded 1.10-1.15x faster per token with it, every quant, at about the
    same compile time (experiments/2026-11-27-cpp-wrapper.md). The CPU has no CUDA graph to capture, so every
    mode compiles the same there. cuda keeps the Python wrapper: a replayed CUDA graph (reduce-overhead) skips
    the wrapper anyway, and the C++ one has not run on a card.

    On cuda, with coordinate_descent, inductor tunes each Triton kernel's launch config by coordinate descent,
    and (torch's mm decomposition) lowers a one-row matmul to a pointwise-times-reduction kernel that takes the
    int8 weight's cast and scale in, where untuned inductor would call aten's slow int8 kernel (`cuda_int8_note`).
    torch.compile takes a mode or options, not both, so the mode's own options are spelled out."""
    if cpp_wrapper:
        return {"cpp_wrapper": True}
    if tuning == "none":
        return None
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), "coordinate_descent_tuning": True}


def prefill_lengths(bucket: int, capacity: int) -> list[int]:
    """The padded prompt lengths compiled for `bucket` (multiples of it, then the whole cache); [] = eager."""
    if bucket == 0:
        return []
    return [*range(bucket, capacity, bucket), capacity]


class _Slot:
    """One batch size: its decoder (the cache), the callables for decode and each prefill length."""

    def __init__(self, decoder: StaticDecoder, step: Any, prefill: Any, lengths: list[int]):
        self.decoder, self.step, self.prefill, self.lengths = decoder, step, prefill, lengths


# ------------------------------------------------------------------------------------------------ the engine


class TorchCompiledEngine(Engine):
    name = "torch_compiled"
    mixed_lengths = True
    continuous = True
    samples = INFO.samples

    def __init__(self, model: nn.Module, device: torch.device, settings: dict[str, Any]):
        self._model = model
        self._device = device
        self._settings = settings
        self._capacity = settings["max_length"]
        self._graphs = device.type == "cuda" and settings["compile_mode"] == "reduce-overhead"
        self._slots: dict[int, _Slot] = {}
        self._lone: _Slot | None = None  # see `_joiner`
        self._parts: tuple[_Slot, TorchCompiledStream] | None = None  # a one-row slot holding a stream's prompt parts
        # One (1,) tensor per cache position, each its own storage: a slice of one arange would differ in
        # storage offset from step to step, which compiled graphs guard on.
        self._positions = [torch.tensor([p], device=device) for p in range(self._capacity)]
        self.compile_report: dict[str, float] = {}  # graph -> seconds its first (compiling) call took
        self.compile_cache: dict[str, Any] | None = None  # inductor's on-disk cache during load; None: not compiled
        self.cudagraph_skips = 0  # graphs inductor compiled without the CUDA graph that reduce-overhead asked for
        eos = model.generation_config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])

    def compile_seconds(self) -> float | None:
        """Seconds `load` spent compiling and first running every graph; `compile_report` has it per graph. None
        with compile_mode=none, where `load` only runs them once (`compile_report` still times that)."""
        if self._settings["compile_mode"] == "none":
            return None
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
        check_architecture(model.config)
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
        if note := cuda_int8_note(settings):
            log.warning("torch_compiled: %s", note)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return engine

    def _prefill_lengths(self) -> list[int]:
        return prefill_lengths(self._settings["prefill_bucket"], self._capacity)

    @functools.cached_property
    def _rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, (capacity, head_dim) each, computed in fp32 and cast as the HF forward does; every decoder
        shares them."""
        positions = torch.arange(self._capacity, device=self._device)[None]
        dtype = getattr(torch, self._settings["dtype"])
        cos, sin = self._model.model.rotary_emb(torch.zeros(1, dtype=dtype, device=self._device), positions)
        return cos[0], sin[0]

    def _decoder(self, batch: int) -> StaticDecoder:
        """A new uncompiled step over a cache of `batch` rows."""
        backend = self._settings["attn_backend"]
        return StaticDecoder(
            self._model, batch, self._capacity, *self._rotary, sdpa_backends(backend), repeats_kv(backend)
        ).to(self._device)

    @torch.inference_mode()
    def _build_slots(self) -> None:
        """Allocate each batch size's cache and run every graph once (compiling it), timing each."""
        positions = torch.arange(self._capacity, device=self._device)[None]
        mode = self._settings["compile_mode"]
        for batch in self._settings["batch_sizes"]:
            decoder = self._decoder(batch)
            step = prefill = decoder
            if mode != "none":
                step = compile_step(decoder, mode, self._settings["compile_tuning"], self._settings["cpp_wrapper"])
                if self._prefill_lengths():
                    # Prefill graphs are plain inductor: capturing a CUDA graph per length buys little once.
                    prefill = compile_step(decoder, "default", "none", self._settings["cpp_wrapper"])
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

    def _call(self, fn: Any, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor,
              samplers: list[RowSampler | None] | None = None) -> torch.Tensor:
        """One decode step through `fn`: each row's next token, drawn for the rows whose sampler draws."""
        if self._graphs:
            torch.compiler.cudagraph_mark_step_begin()
        tokens, logits = fn(ids, positions, last)
        # a CUDA graph's output buffers are reused by its next replay: what is kept is copied before it
        return self._chosen(tokens, logits, samplers, copy=self._graphs)

    def _chosen(self, tokens: torch.Tensor, logits: torch.Tensor, samplers: list[RowSampler | None] | None,
                copy: bool = False) -> torch.Tensor:
        """`tokens` (the argmax of every row of the slot), with the tokens of `samplers`' drawing rows (the first
        rows; the slot's others are padding) drawn from their `logits`, copied to the host for those rows alone."""
        if not samplers or not drawing(samplers):
            return tokens.clone() if copy else tokens
        rows = list(samplers) + [None] * (tokens.shape[0] - len(samplers))
        drawn = pick(tokens.cpu().numpy(), rows, lambda at: logits[at].float().cpu().numpy())
        return torch.from_numpy(drawn).to(self._device)

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """`torch_compiled_runtime.json`: every setting `load` applies (see `runtime_settings`)."""
        settings = runtime_settings(candidate, runtime)
        (Path(folder) / RUNTIME_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def write_compiled_graphs(cls, folder: Path) -> str | None:
        """The graphs a load of `folder` compiles, compiled once more in a fresh process and kept in it
        (`shipped.ship_compiled_graphs`), so that a load on a like machine reads them instead of compiling."""
        candidate, _ = load_settings(folder)
        if candidate.compile_mode == "none":
            return None
        files = ship_compiled_graphs(Path(folder))
        log.info("torch_compiled: the bundle ships its compiled graphs (%d files)", files)
        return SHIPPED_DIR

    @classmethod
    def read_compiled_graphs(cls, folder: Path, recorded: Mapping[str, str]) -> int:
        """The graphs `write_compiled_graphs` shipped, put where this process's compiles look first."""
        return install_shipped_graphs(folder, recorded)

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
    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: Sequence[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        samplers = row_samplers(self.name, self.samples, sampling, input_ids.shape[0])
        batch, prompt_len = input_ids.shape
        starts = np.zeros(batch, dtype=np.int64)
        if prompt_lengths is not None:
            input_ids, mask = left_aligned(input_ids, prompt_lengths)
            starts = prompt_len - mask.sum(axis=1)
        if prompt_len + max_new_tokens - 1 > self._capacity:
            raise ValueError(
                f"prompt {prompt_len} + {max_new_tokens} new tokens needs {prompt_len + max_new_tokens - 1} cache "
                f"positions; this engine's static cache holds {self._capacity}: load it with a larger max_length"
            )
        slot = self._slot(batch)
        self._claim(slot)
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
        rows = slot.decoder.k0.shape[0]
        if rows > batch:  # pad with copies of row 0: real values, never read back
            ids = torch.cat([ids, ids[:1].expand(rows - batch, -1)])
            starts = np.concatenate([starts, np.repeat(starts[:1], rows - batch)])
        slot.decoder.starts.copy_(torch.from_numpy(starts))
        token = self._prefill(slot, ids, samplers)
        yield token[:batch].cpu().numpy()
        for position in range(prompt_len, prompt_len + max_new_tokens - 1):
            token = self._call(slot.step, token[:, None], self._positions[position], self._positions[0], samplers)
            yield token[:batch].cpu().numpy()

    def _prefill(self, slot: _Slot, ids: torch.Tensor, samplers: list[RowSampler | None] | None = None,
                 start: int = 0) -> torch.Tensor:
        """`ids` (the slot's rows, n) into the slot's cache at positions [start, start + n), after its `starts` are
        set and (start > 0) the positions before hold the prompt's first tokens: the token after each row (drawn
        where its sampler draws). Through the bucket's graph where its padded length fits the cache from `start`,
        else eager at the part's own length."""
        n = ids.shape[1]
        last = self._positions[n - 1]
        length = next((bucket for bucket in slot.lengths if bucket >= n), None)
        if length is None or start + length > self._capacity:
            out = slot.decoder(ids.to(self._device), torch.arange(start, start + n, device=self._device), last)
        else:  # the padding's keys land after the part, where the next part (or nothing the row reads) goes
            padded = F.pad(ids, (0, length - n)).to(self._device)
            out = slot.prefill(padded, torch.arange(start, start + length, device=self._device), last)
        return self._chosen(*out, samplers)

    def _claim(self, slot: _Slot, stream: TorchCompiledStream | None = None) -> None:
        """`stream` (None: `generate`) is about to write `slot`'s cache: a stream whose prompt's parts wait there
        copies them out first."""
        if self._parts is not None and self._parts[0] is slot and self._parts[1] is not stream:
            self._parts[1]._save_resident()
            self._parts = None
        if stream is not None:
            self._parts = (slot, stream)

    def stream(self) -> TorchCompiledStream:
        """A continuous batch in the largest slot's cache, its rows prefilled one at a time in the one-row slot
        (`TorchCompiledStream`). It owns that cache while it has rows: a `generate` of that many rows meanwhile
        would overwrite them."""
        big = self._slots[max(self._slots)]
        one = self._slots.get(1)
        return TorchCompiledStream(self, big, one if one is not None and one is not big else self._joiner())

    def _joiner(self) -> _Slot:
        """An uncompiled one-row slot (a cache of one row, the weights shared) to prefill a stream's rows in, where
        the engine has no one-row slot besides the stream's."""
        if self._lone is None:
            decoder = self._decoder(1)
            self._lone = _Slot(decoder, decoder, decoder, [])
        return self._lone

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
        self._lone = None
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


_graphs_requested = 0  # graphs of `StaticDecoder.forward` every load in this process has compiled or reused


def _raise_recompile_limit(graphs: int) -> None:
    """Every batch size and prefill length is its own graph of the one `StaticDecoder.forward`, and dynamo counts
    the graphs of every engine loaded in the process against one limit per code object (8 by default), beyond
    which a fullgraph compile fails. So the limit grows with all the graphs this process's loads asked for."""
    global _graphs_requested
    _graphs_requested += graphs
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, _graphs_requested + 2)

