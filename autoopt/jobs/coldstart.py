"""Cold start per warm-up strategy: each strategy in a fresh process, from nothing to the first request of
every request shape. Warm latency is the benchmark's business; this is what the first users after a
deploy (or a scale-up) wait for, and what the warm-up buys."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from autoopt.bench.latency import time_request, warm_up
from autoopt.bench.memory import peak_rss_mb
from autoopt.bench.requests import make_requests
from autoopt.config.knobs import knobs_of
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, WorkloadConfig
from autoopt.engines.registry import engine_class
from autoopt.jobs.launch import Launcher
from autoopt.jobs.prepare import Prepared
from autoopt.result import Built

STRATEGIES = knobs_of(CandidateConfig)["warmup"].choices


@dataclass(frozen=True)
class ColdStart:
    warmup: str
    load_s: float  # process has the engine loaded
    warmup_s: float  # the strategy's own time
    first_request_ms: dict[str, float]  # "batch x prompt x output" -> e2e of that shape's first request, after warm-up
    peak_rss_mb: float
    # Part of load_s spent compiling graphs, and whether inductor's on-disk cache served them (None: nothing
    # compiled). Every process of a run shares that cache, so a strategy after the first reads it.
    compile_s: float | None = None
    compile_cache_warm: bool | None = None

    @property
    def ready_s(self) -> float:
        """Seconds from the start of loading to taking traffic."""
        return self.load_s + self.warmup_s


@dataclass(frozen=True)
class ColdStartJob:
    candidate: CandidateConfig
    runtime: RuntimeOptions
    workload: WorkloadConfig
    reference: str
    built: Built

    timeout_s: ClassVar[float] = 900.0

    @staticmethod
    def result_type() -> type[ColdStart]:
        return ColdStart

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.runtime.threads)}

    def run(self) -> ColdStart:
        with np.load(self.reference) as z:
            stream = z["stream"]
        w = self.workload
        requests = make_requests(stream, w.prompt_lengths, w.output_lengths, self.runtime.batch_size, w.decoding)
        t0 = time.perf_counter()
        engine = engine_class(self.candidate.engine).load(Path(self.built.artifact), self.candidate, self.runtime)
        load_s = time.perf_counter() - t0
        warmup_s = warm_up(engine, requests, self.candidate.warmup)
        first = {}
        for request in requests:  # each shape once, in the workload's order: every one a first request
            shape = "x".join(map(str, request.shape))
            first[shape] = time_request(engine, request).e2e_s * 1e3
        peak = peak_rss_mb()
        compile_s, cache_warm = engine.compile_seconds(), engine.compile_cache_warm()
        engine.close()
        return ColdStart(self.candidate.warmup, load_s, warmup_s, first, peak, compile_s, cache_warm)


def cold_starts(prep: Prepared, candidate: CandidateConfig, built: Built, launcher: Launcher) -> list[ColdStart]:
    """One fresh process per warm-up strategy, the candidate otherwise unchanged."""
    out = []
    for strategy in STRATEGIES:
        c = replace(candidate, warmup=strategy)
        job = prep.measure_job(c, built)
        out.append(launcher.launch(ColdStartJob(c, job.runtime, prep.workload, str(prep.reference.path), built)))
    return out
