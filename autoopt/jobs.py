"""The two steps of a trial that run in their own process (see `autoopt.isolation`):
building a candidate's artifact, and measuring it (speed, memory, accuracy, cost)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from autoopt.accuracy.metrics import fidelity
from autoopt.accuracy.reference import teacher_forced_logits
from autoopt.bench.latency import run_timed, time_request, warm_up
from autoopt.bench.memory import peak_rss_mb
from autoopt.bench.requests import make_requests
from autoopt.bench.stats import summarize_ms
from autoopt.config.load import to_typed
from autoopt.config.schema import BenchConfig, CandidateConfig, TargetConfig, WorkloadConfig
from autoopt.cost import usd_per_million_tokens
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.registry import engine_class, engine_info
from autoopt.env import fingerprint
from autoopt.passes.pipeline import run_pipeline
from autoopt.result import (
    AccuracyResult,
    BuildInfo,
    CostResult,
    MeasureResult,
    MemoryResult,
    SpeedResult,
)

log = logging.getLogger("autoopt.jobs")


def build_job(p: dict[str, Any]) -> dict[str, Any]:
    candidate = to_typed(p["candidate"], CandidateConfig)
    target = to_typed(p["target"], TargetConfig)
    steps = engine_info(candidate.engine).plan(candidate, target.device)
    built = run_pipeline(Path(p["model_path"]), p["model_key"], steps, Path(p["cache_dir"]))
    return {
        "artifact": str(built.artifact),
        "build": BuildInfo(built.seconds, built.build_seconds, built.cached, list(built.steps), built.key).__dict__,
    }


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def measure_job(p: dict[str, Any]) -> dict[str, Any]:
    candidate = to_typed(p["candidate"], CandidateConfig)
    target = to_typed(p["target"], TargetConfig)
    workload = to_typed(p["workload"], WorkloadConfig)
    bench = to_typed(p["bench"], BenchConfig)
    threads = candidate.threads or target.cores
    batch = candidate.batch_size or workload.batch_size
    reference = np.load(p["reference"])
    requests = make_requests(reference["stream"], workload.prompt_lengths, workload.output_lengths, batch)
    runtime = RuntimeOptions(
        device=target.device,
        threads=threads,
        max_length=max(workload.prompt_lengths) + max(workload.output_lengths),
        max_batch=max(batch, 4),
    )

    t0 = time.perf_counter()
    engine = engine_class(candidate.engine).load(Path(p["artifact"]), candidate, runtime)
    load_s = time.perf_counter() - t0
    warmup_s = warm_up(engine, requests, candidate.warmup)
    cold = time_request(engine, requests[0])
    samples = run_timed(engine, requests, bench)
    peak_rss = peak_rss_mb()
    device_peak = engine.device_peak_memory_bytes()

    ids = reference["ids"]
    fid = fidelity(reference["logits"], teacher_forced_logits(engine, ids), ids)
    engine.close()

    timings = samples.timings
    tokens_per_s = samples.output_tokens_per_s
    tpots = [t.tpot_s for t in timings if t.tpot_s is not None]
    result = MeasureResult(
        candidate=p["candidate"],
        target=target.name,
        model=p["model"],
        build=BuildInfo(**p["build"]),
        speed=SpeedResult(
            batch_size=batch,
            threads=threads,
            runs=len(timings),
            seconds=samples.seconds,
            ttft_ms=summarize_ms([t.ttft_s for t in timings]),
            tpot_ms=summarize_ms(tpots),  # defined: the workload's output lengths are >= 2
            e2e_ms=summarize_ms([t.e2e_s for t in timings]),
            output_tokens_per_s=tokens_per_s,
            load_s=load_s,
            warmup=candidate.warmup,
            warmup_s=warmup_s,
            cold_first_request_ms=cold.e2e_s * 1e3,
        ),
        memory=MemoryResult(
            peak_rss_mb=peak_rss,
            device_peak_mb=None if device_peak is None else device_peak / 2**20,
            artifact_mb=folder_mb(Path(p["artifact"])),
        ),
        accuracy=AccuracyResult(
            kl_mean=fid.kl_mean,
            top1_agreement=fid.top1_agreement,
            perplexity=fid.perplexity,
            reference_perplexity=fid.reference_perplexity,
            tokens=fid.positions,
        ),
        cost=CostResult(
            usd_per_1m_output_tokens=usd_per_million_tokens(target.price_per_hour, tokens_per_s),
            price_per_hour=target.price_per_hour,
            target=target.name,
            price_source=target.price_source,
        ),
        env=fingerprint(),
    )
    return result.to_dict()
