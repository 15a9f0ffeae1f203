"""Ratios measured side by side: the fp32 reference and a chosen candidate timed in alternation
(A B A B ...), each run in a fresh process, so that a machine whose speed swings from minute to minute
shifts both sides of each round alike. A speed-up is reported as the median of the per-round ratios
with their range, never as two figures taken minutes apart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from autoopt.bench.latency import run_timed, warm_up
from autoopt.bench.requests import make_requests
from autoopt.bench.stats import summarize_shapes
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import BenchConfig, CandidateConfig, WorkloadConfig
from autoopt.engines.registry import engine_class
from autoopt.jobs.launch import Launcher
from autoopt.jobs.prepare import Prepared
from autoopt.result import Built, MeasureResult, contended


@dataclass(frozen=True)
class SpeedSample:
    tokens_per_s: float  # output tokens (all rows) per second of the timed runs
    latency_ms: dict[str, float]  # "{ttft,tpot,e2e}_{p50,p90,p99}" -> ms, over every timed request
    runs: int
    other_cpu_share: float = 0.0  # of all CPUs, taken by other processes while the runs were timed


@dataclass(frozen=True)
class SpeedJob:
    """Speed only (no accuracy): load, warm up as the candidate says, time whole passes of the workload."""

    candidate: CandidateConfig
    runtime: RuntimeOptions
    workload: WorkloadConfig
    bench: BenchConfig
    reference: str
    built: Built

    timeout_s: ClassVar[float] = 900.0

    @staticmethod
    def result_type() -> type[SpeedSample]:
        return SpeedSample

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.runtime.threads)}

    def run(self) -> SpeedSample:
        with np.load(self.reference) as z:
            stream = z["stream"]
        requests = make_requests(stream, self.workload.prompt_lengths, self.workload.output_lengths,
                                 self.runtime.batch_size, self.workload.decoding)
        engine = engine_class(self.candidate.engine).load(Path(self.built.artifact), self.candidate, self.runtime)
        warm_up(engine, requests, self.candidate.warmup)
        samples = run_timed(engine, requests, self.bench)
        engine.close()
        stats = summarize_shapes(samples.timings)
        latency = {
            f"{kind}_{pct}": getattr(getattr(stats, f"{kind}_ms"), pct)
            for kind in ("ttft", "tpot", "e2e")
            for pct in ("p50", "p90", "p99")
        }
        return SpeedSample(samples.output_tokens_per_s, latency, len(samples.timings), samples.other_cpu_share)


@dataclass(frozen=True)
class Ratio:
    """A per-round ratio (how many times better the candidate is), its median and range over rounds."""

    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)

    def __str__(self) -> str:
        return f"{self.median:.2f}x (range {self.low:.2f}-{self.high:.2f} over {len(self.rounds)} interleaved rounds)"


@dataclass(frozen=True)
class Confirmation:
    latency: str  # the latency figure compared, e.g. e2e_p90
    speedup: Ratio  # candidate tokens/s over the reference's, per round
    latency_gain: Ratio  # reference latency over the candidate's, per round
    reference: list[SpeedSample]
    candidate: list[SpeedSample]
    batches: tuple[int, int] = (1, 1)  # rows per request: the reference's, the candidate's

    @property
    def other_cpu_share(self) -> float:
        """The most of the machine other processes took during any one timed run."""
        return max(s.other_cpu_share for s in [*self.reference, *self.candidate])

    @property
    def contended(self) -> bool:
        """Whether other work took enough of the machine (a quarter of its CPUs: half a core of two) that the
        ratio may say more about it than about the candidates."""
        return contended(self.other_cpu_share)


def side_by_side(
    prep: Prepared, results: list[MeasureResult], launcher: Launcher, rounds: int = 3
) -> list[list[SpeedSample]]:
    """Time every measured candidate once per round, in turn, each run in its own process; the order is
    reversed on alternate rounds so no candidate always runs first. Returns each candidate's samples by round."""
    jobs = [SpeedJob(r.candidate, r.runtime, prep.workload, prep.bench, str(prep.reference.path), r.build)
            for r in results]
    runs: list[list[SpeedSample]] = [[] for _ in jobs]
    for i in range(rounds):
        order = range(len(jobs)) if i % 2 == 0 else reversed(range(len(jobs)))
        for j in order:
            runs[j].append(launcher.launch(jobs[j]))
    return runs


def confirm(
    prep: Prepared, reference: MeasureResult, candidate: MeasureResult, latency: str, launcher: Launcher, rounds: int = 3
) -> Confirmation:
    """Time `reference` and `candidate` alternately for `rounds` rounds, each run in its own process."""
    ref_runs, cand_runs = side_by_side(prep, [reference, candidate], launcher, rounds)
    return Confirmation(
        latency=latency,
        speedup=Ratio([c.tokens_per_s / r.tokens_per_s for r, c in zip(ref_runs, cand_runs, strict=True)]),
        latency_gain=Ratio(
            [r.latency_ms[latency] / c.latency_ms[latency] for r, c in zip(ref_runs, cand_runs, strict=True)]
        ),
        reference=ref_runs,
        candidate=cand_runs,
        batches=(reference.runtime.batch_size, candidate.runtime.batch_size),
    )
