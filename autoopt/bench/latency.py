"""Time real generation: TTFT, TPOT and end-to-end latency of whole requests.

Engines return host arrays, so a yielded token means the device has finished it: timestamps taken
at each yield include everything the user waits for (prefill, every decode step, the copy back, and the draws of
rows that sample where the workload does).

Warm means warm: before timing, every request shape runs `bench.warmup_runs` times, and the timed
loop runs whole cycles over all shapes, so no shape runs for the first time inside it and none is
dropped by stopping mid-cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from autoopt.bench.contention import other_cpu_share
from autoopt.bench.requests import Request
from autoopt.config.schema import BenchConfig, bench_problem
from autoopt.engines.base import Engine

log = logging.getLogger("autoopt.bench")

Clock = Callable[[], float]


@dataclass(frozen=True)
class RequestTiming:
    ttft_s: float
    e2e_s: float
    batch: int
    new_tokens: int  # per row, counted as yielded (always the request's max_new_tokens, or time_request raises)
    prompt_len: int

    @property
    def tokens(self) -> int:
        return self.batch * self.new_tokens

    @property
    def tpot_s(self) -> float | None:
        steps = self.new_tokens - 1
        return (self.e2e_s - self.ttft_s) / steps if steps > 0 else None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(prompt_len, output_len, batch): the key percentiles are grouped by."""
        return (self.prompt_len, self.new_tokens, self.batch)


@dataclass
class Samples:
    timings: list[RequestTiming] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the timed cycles
    cycles: int = 0  # complete passes over every request shape
    burn_in_s: float = 0.0  # wall time of the untimed full passes before them
    other_cpu_share: float = 0.0  # of the CPUs this process may use, taken by other processes during the timed cycles

    @property
    def output_tokens_per_s(self) -> float:
        """Generated tokens of every row of every timed request over the wall time of the timed runs."""
        return sum(t.tokens for t in self.timings) / self.seconds


def _step_problem(engine: Engine, request: Request, step: int, token: object) -> str | None:
    batch = request.input_ids.shape[0]
    if isinstance(token, np.ndarray) and token.dtype == np.int64 and token.shape == (batch,):
        return None
    got = f"{token.dtype} array of shape {token.shape}" if isinstance(token, np.ndarray) else type(token).__name__
    return (
        f"engine {engine.name} yielded step {step} as {got}; the Engine contract is an int64 array of shape "
        f"({batch},) (one token per row) for prompt shape {request.input_ids.shape}"
    )


def time_request(engine: Engine, request: Request, clock: Clock = time.perf_counter) -> RequestTiming:
    """Generate `request` once, timestamping the first yield and the end; every step is checked.

    Raises RuntimeError (one line) when a step is not an int64 (batch,) array or the engine yields a
    count of tokens other than `request.max_new_tokens`.
    """
    expected = request.max_new_tokens
    count = 0
    ttft = 0.0
    t0 = clock()
    sampling = {"sampling": list(request.sampling)} if request.sampling is not None else {}
    stream = iter(engine.generate(request.input_ids, expected, **sampling))
    for token in stream:
        if count == 0:
            ttft = clock() - t0
        problem = _step_problem(engine, request, count, token)
        count += 1
        if problem is None and count > expected:
            problem = f"engine {engine.name} yielded more than max_new_tokens={expected} tokens"
        if problem:
            close = getattr(stream, "close", None)  # a generator: stop it before it runs on
            if close is not None:
                close()
            raise RuntimeError(problem)
    e2e = clock() - t0
    if count != expected:
        raise RuntimeError(
            f"engine {engine.name} yielded {count} tokens for max_new_tokens={expected} "
            f"(prompt shape {request.input_ids.shape}); the Engine contract is exactly max_new_tokens steps"
        )
    batch, prompt_len = request.input_ids.shape
    return RequestTiming(ttft, e2e, batch, count, prompt_len)


def warm_up(engine: Engine, requests: Sequence[Request], strategy: str) -> float:
    """The deployment's warm-up strategy before it takes traffic; returns the seconds it took.

    none: nothing; one: a single short request at the largest prompt; shapes: one short request
    per prompt shape the workload sends. (The benchmark's own burn-in in `run_timed` comes after this
    and the cold first request, and is not part of the deployment's cold start.)
    """
    t0 = time.perf_counter()
    if strategy == "one":
        largest = max(requests, key=lambda r: r.input_ids.shape[1])
        time_request(engine, replace(largest, max_new_tokens=2))
    elif strategy == "shapes":
        for shape in sorted({r.input_ids.shape for r in requests}):
            request = next(r for r in requests if r.input_ids.shape == shape)
            time_request(engine, replace(request, max_new_tokens=2))
    return time.perf_counter() - t0


def cycle_stops(runs: int, seconds: float, cycle_len: int, bench: BenchConfig) -> bool:
    """After a complete cycle: stop when both minimums are met, when max_seconds has passed, or when
    another cycle would take the run count past max_runs (the first cycle always runs)."""
    enough = runs >= bench.min_runs and seconds >= bench.min_seconds
    return enough or seconds >= bench.max_seconds or runs + cycle_len > bench.max_runs


def run_timed(
    engine: Engine, requests: Sequence[Request], bench: BenchConfig, clock: Clock = time.perf_counter
) -> Samples:
    """Burn in with `bench.warmup_runs` full untimed passes over `requests`, then time complete passes
    (cycles) until `cycle_stops`. Raises ValueError for a `bench` that `bench_problem` rejects."""
    problem = bench_problem(bench)
    if problem:
        raise ValueError(problem)
    if not requests:
        raise ValueError("no requests to time; the workload needs at least one prompt and one output length")
    t0 = clock()
    for _ in range(bench.warmup_runs):
        for request in requests:
            time_request(engine, request, clock)
    samples = Samples(burn_in_s=clock() - t0)
    start = clock()
    with other_cpu_share() as other:
        while True:
            for request in requests:
                samples.timings.append(time_request(engine, request, clock))
            samples.cycles += 1
            samples.seconds = clock() - start
            if cycle_stops(len(samples.timings), samples.seconds, len(requests), bench):
                break
    samples.other_cpu_share = other.share
    log.info(
        "timed %d requests (%d cycles of %d shapes) in %.1fs after %d burn-in passes (%.1fs)",
        len(samples.timings), samples.cycles, len(requests), samples.seconds, bench.warmup_runs, samples.burn_in_s,
    )
    return samples
