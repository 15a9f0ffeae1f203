"""The measuring step of a trial, in a child process: load the built artifact with the resolved runtime
options, warm up, time real generation, read memory, measure accuracy against the fp32 reference, cost."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autoopt.accuracy.decode import decode_fidelity
from autoopt.accuracy.metrics import fidelity
from autoopt.accuracy.reference import teacher_forced_logits
from autoopt.bench.contention import other_cpu_share
from autoopt.bench.latency import run_timed, time_request, warm_up
from autoopt.bench.memory import peak_rss_mb
from autoopt.bench.profile import RequestWall, profile_request, time_phases
from autoopt.bench.requests import Request, make_requests
from autoopt.bench.roofline import artifact_weights_and_kv, mean_decode_context, roofline
from autoopt.bench.stats import summarize_shapes
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import BenchConfig, CandidateConfig, TargetConfig, WorkloadConfig
from autoopt.config.serving import ServingConfig
from autoopt.cost import usd_per_million_tokens
from autoopt.digest import sha256_file
from autoopt.engines.registry import engine_class, engine_info
from autoopt.env import fingerprint
from autoopt.progress import say
from autoopt.result import (
    AccuracyResult,
    Bandwidth,
    Built,
    CostResult,
    MeasureResult,
    MemoryResult,
    Profile,
    Roofline,
    SpeedResult,
)
from autoopt.serving.measure import measure_serving

log = logging.getLogger("autoopt.jobs")


@dataclass(frozen=True)
class MeasureJob:
    candidate: CandidateConfig
    target: TargetConfig
    workload: WorkloadConfig
    bench: BenchConfig
    runtime: RuntimeOptions
    model: dict[str, Any]
    reference: str  # the fp32 reference .npz
    built: Built
    serving: ServingConfig | None = None  # measure capacity under this traffic (the serving objective)
    bandwidth: Bandwidth | None = None  # the machine's copy bandwidth, for the roofline (CPU targets)

    timeout_s: ClassVar[float] = 1800.0

    @staticmethod
    def result_type() -> type[MeasureResult]:
        return MeasureResult

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.runtime.threads)}

    def run(self) -> MeasureResult:
        return measure(self)


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def measure(job: MeasureJob) -> MeasureResult:
    candidate, target, runtime = job.candidate, job.target, job.runtime
    reference_path = Path(job.reference)
    reference = np.load(reference_path)
    requests = make_requests(
        reference["stream"], job.workload.prompt_lengths, job.workload.output_lengths, runtime.batch_size,
        job.workload.decoding,
    )
    artifact = Path(job.built.artifact)

    say("load the engine (compiling where it compiles)")
    t0 = time.perf_counter()
    engine = engine_class(candidate.engine).load(artifact, candidate, runtime)
    load_s = time.perf_counter() - t0
    compiled_s, cache_warm = engine.compile_seconds(), engine.compile_cache_warm()
    say("warm up, then time the requests")
    warmup_s = warm_up(engine, requests, candidate.warmup)
    cold = time_request(engine, requests[0])
    allocations = engine.static_kv_allocations()
    samples = run_timed(engine, requests, job.bench)
    if engine.static_kv_allocations() != allocations:
        raise RuntimeError(f"engine {candidate.engine} allocated its static KV cache inside a timed request")
    serving = None
    if job.serving is not None:
        w = job.workload
        with other_cpu_share() as busy:
            serving = measure_serving(engine, job.serving, reference["stream"], w.prompt_lengths, w.output_lengths,
                                      target.price_per_hour, w.decoding)
        serving = replace(serving, other_cpu_share=busy.share)
    # After the timed runs and the capacity probes' batches (which the memory constraint must cover), before the
    # accuracy pass's own arrays.
    peak_rss = peak_rss_mb()
    device_peak = engine.device_peak_memory_bytes()

    say("accuracy against the fp32 reference")
    ids = reference["ids"]
    fid = fidelity(reference["logits"], teacher_forced_logits(engine, ids), ids, job.workload.decoding)
    decode = decode_fidelity(engine, reference["decode_prompts"], reference["decode_tokens"])
    if job.bench.profile:
        say("profile where the time goes")
    probe = _profile_request(requests, job.workload)
    repeats = job.bench.profile_repeats  # the profiled load repeats as often as this unprofiled timing (`wall`)
    wall = time_phases(engine, probe.input_ids, probe.max_new_tokens, repeats) if job.bench.profile else None
    engine.close()

    stats = summarize_shapes(samples.timings)
    profile = None
    if wall is not None:  # a separate, profiled load: never inside the timed runs
        profile = _profile(job, artifact, probe, wall)
    roof = _roofline(job, artifact, stats.tpot_ms.p50)
    tokens_per_s = samples.output_tokens_per_s
    return MeasureResult(
        candidate=candidate,
        target=target.name,
        model=job.model,
        runtime=runtime,
        build=job.built,
        reference_sha256=sha256_file(reference_path),
        speed=SpeedResult(
            runs=len(samples.timings),
            cycles=samples.cycles,
            seconds=samples.seconds,
            burn_in_s=samples.burn_in_s,
            ttft_ms=stats.ttft_ms,
            tpot_ms=stats.tpot_ms,
            e2e_ms=stats.e2e_ms,
            output_tokens_per_s=tokens_per_s,
            load_s=load_s,
            compile_s=compiled_s,
            warmup=candidate.warmup,
            warmup_s=warmup_s,
            cold_first_request_ms=cold.e2e_s * 1e3,
            shapes=stats.shapes,
            ttft_cv_within_shape_median=stats.ttft_cv_within_shape_median,
            tpot_cv_within_shape_median=stats.tpot_cv_within_shape_median,
            e2e_cv_within_shape_median=stats.e2e_cv_within_shape_median,
            compile_cache_warm=cache_warm,
            other_cpu_share=samples.other_cpu_share,
        ),
        memory=MemoryResult(
            peak_rss_mb=peak_rss,
            device_peak_mb=None if device_peak is None else device_peak / 2**20,
            artifact_mb=folder_mb(artifact),
        ),
        accuracy=AccuracyResult(
            kl_mean=fid.kl_mean,
            top1_agreement=fid.top1_agreement,
            perplexity=fid.perplexity,
            reference_perplexity=fid.reference_perplexity,
            tokens=fid.positions,
            decode_prefix_agreement=decode.prefix_agreement,
            decode_token_agreement=decode.token_agreement,
            decode_tokens=decode.tokens,
            decode_self_agreement=decode.self_agreement,
            sampled_agreement=fid.sampled_agreement,
        ),
        cost=CostResult(
            usd_per_1m_output_tokens=usd_per_million_tokens(target.price_per_hour, tokens_per_s),
            price_per_hour=target.price_per_hour,
            target=target.name,
            price_source=target.price_source,
        ),
        serving=serving,
        profile=profile,
        roofline=roof,
        env=fingerprint(),
    )


def _profile_request(requests: list[Request], workload: WorkloadConfig) -> Request:
    """The representative request: the middle prompt length with the shortest output."""
    prompts = sorted(workload.prompt_lengths)
    middle, shortest = prompts[len(prompts) // 2], min(workload.output_lengths)
    return next(r for r in requests if r.input_ids.shape[1] == middle and r.max_new_tokens == shortest)


def _profile(job: MeasureJob, artifact: Path, probe: Request, wall: RequestWall) -> Profile:
    c = job.candidate
    try:
        return profile_request(c.engine, engine_class(c.engine), artifact, c, job.runtime, probe.input_ids,
                               probe.max_new_tokens, wall)
    except Exception as e:  # a profiler's failure must not fail the trial: the result says what happened
        batch, prompt_len = probe.input_ids.shape
        return Profile(c.engine, "failed", batch, prompt_len, probe.max_new_tokens, job.bench.profile_repeats,
                       unavailable=f"profiling failed: {type(e).__name__}: {e}")


def _roofline(job: MeasureJob, artifact: Path, tpot_ms: float) -> Roofline | None:
    """None without a bandwidth (a cuda target without one is refused at start-up), or for an engine whose
    stored bytes are not counted (or an HF folder whose weights are not in safetensors: `pytorch_model.bin`)."""
    if job.bandwidth is None:
        return None
    c, w, batch = job.candidate, job.workload, job.runtime.batch_size
    try:
        weights, kv = artifact_weights_and_kv(c.engine, artifact, c.quant, rows_read=batch,
                                              group_size=c.quant_block_size, device=job.runtime.device)
    except (ValueError, FileNotFoundError) as e:
        log.info("no roofline: %s", e)
        return None
    mean_context = mean_decode_context([(p, n) for p in w.prompt_lengths for n in w.output_lengths])
    context = engine_info(c.engine).decode_context(c, mean_context, job.runtime.max_length)
    return roofline(weights, kv, context, tpot_ms, job.bandwidth, batch=batch)
