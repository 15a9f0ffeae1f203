"""Where the time goes: the runtime's own profiler, time by operator type, for prefill and for decode.

One representative request (`input_ids`, `new_tokens`) is profiled on a SEPARATE load of the engine,
after the timed runs and never inside them: profiling slows every operator down, so the profiled runs only
say how time divides between operator types, and the unprofiled wall time of the same request (timed on
the measured engine by `time_phases`) says how much time there is. The request is profiled `repeats`
times and, per phase, the repeat with the least op time is reported, and the unprofiled time is the least
of its repeats too: on a shared machine noise only adds time (a preempted kernel reads milliseconds), so
the least-disturbed run is the one that says where the time goes, and both sides are compared alike.

- prefill is the first step of `Engine.generate` (up to the first yielded token), decode the later
  `new_tokens - 1` steps, as TTFT and TPOT are defined.
- torch, torch_compiled: `torch.profiler` (CPU activities) around the engine's own `generate`, one profiler
  session per phase; time per op name is its self CPU time (nested ops are not counted twice). A compiled
  graph shows as its `## Call CompiledFxGraph <hash> ##` event (the fused kernels inside it) plus the
  library kernels it calls (`aten::mm`, ...).
- ort, ort_tensorrt, ort_genai: ONNX Runtime's session profiling (a load flag on the engine,
  `profile_prefix`); the JSON trace's `cat == "Node"` kernel events carry `args.op_name` and are assigned
  to the `model_run` event they fall in. Every engine runs the graph once per generated token, so the
  profiled request is the trace's last `new_tokens` runs: the first is prefill, the rest decode.
- Any other engine: the result says the profile is unavailable and why, instead of guessing.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine
from autoopt.result import OpTime, PhaseProfile, Profile

PREFILL, DECODE = "prefill", "decode"
TORCH_PROFILER = "torch.profiler, CPU activities, self CPU time per op name"
ORT_PROFILER = "onnxruntime session profiling, Node kernel time per op type"
_ORT_ENGINES = ("ort", "ort_tensorrt", "ort_genai")
_TORCH_ENGINES = ("torch", "torch_compiled")

# The op self-times of a phase, as a fraction of that phase's wall time:
# - of the PROFILED run's wall (`accounted`): at most 1 (ops run one after another on the calling thread,
#   inside the phase), and at least 0.5 unless something big runs outside any op (torch: Python between ops).
ACCOUNTED_MARGIN = (0.5, 1.02)
# - of the UNPROFILED wall (`coverage`): below 1 by the time outside any op, above 1 by what the profiler
#   adds to every op it times. Both profilers cost microseconds per op (ONNX Runtime: a Shape or Reshape
#   that takes < 1 us reads 5 us, and its thread pool slows), so decode steps made of many small ops read
#   long: on the built-in model (2-core VM, 2026-11-27) decode ops summed to 1.5-2.8x the unprofiled decode
#   time for the unfused ORT fp32 export (~340 kernels a step) and torch eager (~400 aten ops a step),
#   1.3-1.7x for the fused genai graphs, while prefill (few, large ops) stayed within 0.8-1.2x. Wide,
#   because the overhead is per op and the shared machine's speed swings between the two runs.
COVERAGE_MARGIN = (0.3, 3.5)


@dataclass(frozen=True)
class RequestWall:
    """Unprofiled wall time of one request, split as TTFT and the rest: the least of `repeats` runs each."""

    prefill_ms: float
    decode_ms: float
    repeats: int


Clock = Callable[[], float]


def time_phases(
    engine: Engine, input_ids: np.ndarray, new_tokens: int, repeats: int = 5, clock: Clock = time.perf_counter
) -> RequestWall:
    """Time `engine.generate(input_ids, new_tokens)` `repeats` times after one untimed run; the least time to
    the first token and the least time from it to the last. Call it on the measured engine after its timed
    runs (it is warm), not on a profiled load."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: a profile needs >= 2 to have a decode phase; use 32")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: needs >= 1")
    _phase_times(engine.generate(input_ids, new_tokens), clock)
    runs = [_phase_times(engine.generate(input_ids, new_tokens), clock) for _ in range(repeats)]
    return RequestWall(
        prefill_ms=1e3 * min(r[0] for r in runs),
        decode_ms=1e3 * min(r[1] for r in runs),
        repeats=repeats,
    )


def _phase_times(steps: Iterator[np.ndarray], clock: Clock) -> tuple[float, float]:
    start = clock()
    next(steps)
    first = clock()
    for _ in steps:
        pass
    return first - start, clock() - first


def profile_request(
    engine_name: str,
    engine_cls: type[Engine],
    artifact: Path,
    candidate: CandidateConfig,
    runtime: RuntimeOptions,
    input_ids: np.ndarray,
    new_tokens: int,
    wall: RequestWall,
    top: int = 5,
    warmup: int = 1,
) -> Profile:
    """Load `engine_cls` afresh with its runtime's profiler, run `warmup` untimed requests and as many profiled
    ones as `wall` (the unprofiled time of the same request) took its least of, so that both sides are alike;
    release it, and return the top `top` op types per phase next to `wall`. The caller must have released the
    measured engine first if memory matters."""
    repeats = wall.repeats
    batch, prompt_len = input_ids.shape
    base: dict[str, Any] = {
        "engine": engine_name, "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats
    }
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: a profile needs >= 2 to have a decode phase; use 32")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: needs >= 1")
    args = (engine_cls, artifact, candidate, runtime, input_ids, new_tokens, warmup, repeats)
    if engine_name in _TORCH_ENGINES:
        phases = _least_disturbed(_profile_torch(*args))
        profiler = TORCH_PROFILER
    elif engine_name in _ORT_ENGINES:
        phases = _least_disturbed(_profile_ort(*args))
        profiler = ORT_PROFILER
    else:
        return Profile(
            **base,
            profiler="none",
            unavailable=f"no profiler wired for engine {engine_name!r} (profiled: {', '.join(_TORCH_ENGINES + _ORT_ENGINES)})",
        )
    walls = {PREFILL: wall.prefill_ms, DECODE: wall.decode_ms}
    return Profile(
        **base,
        profiler=profiler,
        phases=tuple(
            _summarise(name, steps, ops, profiled_wall_ms, walls[name], top)
            for name, (steps, ops, profiled_wall_ms) in phases.items()
        ),
    )


# A phase as measured: (steps, {op: (self µs, calls)}, wall ms of the profiled run).
_RawPhase = tuple[int, dict[str, tuple[float, int]], float]


def _least_disturbed(runs: list[dict[str, _RawPhase]]) -> dict[str, _RawPhase]:
    """Per phase, the repeat whose op times sum to the least: one whole, consistent run (its ops fit inside
    its wall time), the one a preemption disturbed least."""
    return {
        phase: min((run[phase] for run in runs), key=lambda raw: sum(us for us, _ in raw[1].values()))
        for phase in (PREFILL, DECODE)
    }


def _summarise(
    phase: str, steps: int, ops: dict[str, tuple[float, int]], profiled_wall_ms: float, wall_ms: float, top: int
) -> PhaseProfile:
    total_us = sum(us for us, _ in ops.values())
    ranked = sorted(ops.items(), key=lambda item: -item[1][0])[:top]
    return PhaseProfile(
        phase=phase,
        steps=steps,
        profiled_ms=total_us / 1e3,
        profiled_wall_ms=profiled_wall_ms,
        wall_ms=wall_ms,
        top=tuple(
            OpTime(op=op, ms=us / 1e3, share=us / total_us if total_us else 0.0, calls=calls)
            for op, (us, calls) in ranked
        ),
    )


def _profile_torch(
    engine_cls: type[Engine],
    artifact: Path,
    candidate: CandidateConfig,
    runtime: RuntimeOptions,
    input_ids: np.ndarray,
    new_tokens: int,
    warmup: int,
    repeats: int,
) -> list[dict[str, _RawPhase]]:
    from torch.profiler import ProfilerActivity, profile

    engine = engine_cls.load(artifact, candidate, runtime)
    runs = []
    try:
        for _ in range(warmup):
            for _ in engine.generate(input_ids, new_tokens):
                pass
        for _ in range(repeats):
            steps = engine.generate(input_ids, new_tokens)
            # One profiler session per phase: the generator is lazy, so each next() runs exactly one step.
            with profile(activities=[ProfilerActivity.CPU]) as prefill:
                start = time.perf_counter()
                next(steps)
                prefill_wall = time.perf_counter() - start
            with profile(activities=[ProfilerActivity.CPU]) as decode:
                start = time.perf_counter()
                decoded = sum(1 for _ in steps)
                decode_wall = time.perf_counter() - start
            if decoded != new_tokens - 1:
                raise RuntimeError(f"torch generate yielded {decoded + 1} tokens for new_tokens={new_tokens}")
            runs.append(
                {
                    PREFILL: (1, _torch_ops(prefill), 1e3 * prefill_wall),
                    DECODE: (decoded, _torch_ops(decode), 1e3 * decode_wall),
                }
            )
    finally:
        engine.close()
    return runs


def _torch_ops(prof: Any) -> dict[str, tuple[float, int]]:
    return {e.key: (float(e.self_cpu_time_total), int(e.count)) for e in prof.key_averages()}


def _profile_ort(
    engine_cls: type[Engine],
    artifact: Path,
    candidate: CandidateConfig,
    runtime: RuntimeOptions,
    input_ids: np.ndarray,
    new_tokens: int,
    warmup: int,
    repeats: int,
) -> list[dict[str, _RawPhase]]:
    with tempfile.TemporaryDirectory(prefix="autoopt_profile_") as folder:
        prefix = str(Path(folder) / "trace")
        engine = engine_cls.load(artifact, candidate, runtime, profile_prefix=prefix)  # type: ignore[call-arg]
        try:
            for _ in range(warmup):
                for _ in engine.generate(input_ids, new_tokens):
                    pass
            walls = [_phase_times(engine.generate(input_ids, new_tokens), time.perf_counter) for _ in range(repeats)]
        finally:
            engine.close()
            del engine
            gc.collect()  # the runtime writes the trace when the session is destroyed
        traces = sorted(Path(folder).glob("trace*.json"))
        if len(traces) != 1:
            raise RuntimeError(
                f"expected one ONNX Runtime profile trace under {folder}, found {len(traces)}: "
                "was the session (and every generator) released by close()?"
            )
        events = json.loads(traces[0].read_text())
    requests = ort_requests(events, new_tokens, repeats)
    return [
        {
            PREFILL: (1, prefill, 1e3 * wall[0]),
            DECODE: (new_tokens - 1, decode, 1e3 * wall[1]),
        }
        for (prefill, decode), wall in zip(requests, walls, strict=True)
    ]


_OpTimes = dict[str, tuple[float, int]]


def ort_requests(events: Sequence[dict[str, Any]], new_tokens: int, requests: int) -> list[tuple[_OpTimes, _OpTimes]]:
    """For each of the LAST `requests` requests in an ONNX Runtime trace (`new_tokens` `model_run` events
    each, one per generated token, the first being prefill): op type → (kernel µs, calls) of its prefill run
    and of its decode runs. Earlier runs (warm-up) are ignored."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    wanted = new_tokens * requests
    if len(runs) < wanted:
        raise ValueError(
            f"ONNX Runtime trace holds {len(runs)} model_run events, fewer than new_tokens x requests = {wanted}"
        )
    runs = runs[-wanted:]
    starts = [r["ts"] for r in runs]
    phases: list[dict[str, list[float]]] = [defaultdict(list) for _ in range(2 * requests)]
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ts = event["ts"]
        index = int(np.searchsorted(starts, ts, side="right")) - 1
        if index < 0 or ts > runs[index]["ts"] + runs[index]["dur"]:
            continue  # a warm-up run, or between runs
        request, step = divmod(index, new_tokens)
        phases[2 * request + (0 if step == 0 else 1)][event["args"]["op_name"]].append(float(event["dur"]))
    summed = [{op: (sum(d), len(d)) for op, d in phase.items()} for phase in phases]
    return [(summed[2 * r], summed[2 * r + 1]) for r in range(requests)]


def format_profile(profile: Profile) -> str:
    """A Markdown table: one row per phase and top op type (ms, share), and each phase's coverage."""
    if profile.unavailable:
        return f"{profile.engine}: no profile ({profile.unavailable})"
    lines = ["| phase | op type | ms | share | calls |", "|---|---|---:|---:|---:|"]
    for phase in profile.phases:
        for op in phase.top:
            lines.append(f"| {phase.phase} | {op.op} | {op.ms:.2f} | {op.share:.1%} | {op.calls} |")
        lines.append(
            f"| {phase.phase} | (all ops, {phase.steps} steps) | {phase.profiled_ms:.2f} | "
            f"{phase.accounted:.0%} of {phase.profiled_wall_ms:.2f} ms profiled, "
            f"{phase.coverage:.0%} of {phase.wall_ms:.2f} ms unprofiled | |"
        )
    return "\n".join(lines)
