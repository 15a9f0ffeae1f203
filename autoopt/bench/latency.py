"""Time real generation: TTFT, TPOT and end-to-end latency of whole requests.

Engines return host arrays, so a yielded token means the device has finished it: timestamps taken
at each yield include everything the user waits for (prefill, every decode step, the copy back).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from autoopt.bench.requests import Request
from autoopt.config.schema import BenchConfig
from autoopt.engines.base import Engine

log = logging.getLogger("autoopt.bench")


@dataclass(frozen=True)
class RequestTiming:
    ttft_s: float
    e2e_s: float
    batch: int
    new_tokens: int  # per row

    @property
    def tokens(self) -> int:
        return self.batch * self.new_tokens

    @property
    def tpot_s(self) -> float | None:
        steps = self.new_tokens - 1
        return (self.e2e_s - self.ttft_s) / steps if steps > 0 else None


@dataclass
class Samples:
    timings: list[RequestTiming] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Generated tokens of every row of every timed request over the wall time of the timed runs."""
        return sum(t.tokens for t in self.timings) / self.seconds


def time_request(engine: Engine, request: Request) -> RequestTiming:
    t0 = time.perf_counter()
    ttft = 0.0
    for i, _ in enumerate(engine.generate(request.input_ids, request.max_new_tokens)):
        if i == 0:
            ttft = time.perf_counter() - t0
    e2e = time.perf_counter() - t0
    return RequestTiming(ttft, e2e, request.input_ids.shape[0], request.max_new_tokens)


def warm_up(engine: Engine, requests: Sequence[Request], strategy: str) -> float:
    """The deployment's warm-up strategy before it takes traffic; returns the seconds it took.

    none: nothing; one: a single short request at the largest prompt; shapes: one short request
    per prompt shape the workload sends.
    """
    t0 = time.perf_counter()
    if strategy == "one":
        largest = max(requests, key=lambda r: r.input_ids.shape[1])
        time_request(engine, Request(largest.input_ids, 2))
    elif strategy == "shapes":
        for shape in sorted({r.input_ids.shape for r in requests}):
            request = next(r for r in requests if r.input_ids.shape == shape)
            time_request(engine, Request(request.input_ids, 2))
    return time.perf_counter() - t0


def run_timed(engine: Engine, requests: Sequence[Request], bench: BenchConfig) -> Samples:
    """Burn in, then cycle through `requests` until both the minimum count and duration are met."""
    for request in itertools.islice(itertools.cycle(requests), bench.warmup_runs):
        time_request(engine, request)
    samples = Samples()
    start = time.perf_counter()
    for request in itertools.cycle(requests):
        samples.timings.append(time_request(engine, request))
        samples.seconds = time.perf_counter() - start
        n = len(samples.timings)
        enough = n >= bench.min_runs and samples.seconds >= bench.min_seconds and n % len(requests) == 0
        if enough or n >= bench.max_runs or samples.seconds >= bench.max_seconds:
            break
    log.info("timed %d requests in %.1fs", len(samples.timings), samples.seconds)
    return samples
