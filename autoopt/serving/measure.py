"""A candidate's serving figures, measured in the measuring child after the benchmark: its capacity under
the workload's open-loop traffic and priority classes, and what the workload's peak costs at it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoopt.config.schema import DecodingConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.base import Engine
from autoopt.result import ServingClassResult, ServingProbe, ServingResult
from autoopt.serving.capacity import Probe, cost_at_load, find_capacity
from autoopt.serving.loadgen import expected_output_tokens
from autoopt.serving.runner import continuous, engine_system, mixes_lengths, warm_up

MAX_PROBES = 8  # raising + narrowing steps per candidate: bounds a trial's serving time


def measure_serving(
    engine: Engine,
    cfg: ServingConfig,
    tokens: np.ndarray,
    prompt_lengths: Sequence[int],
    output_lengths: Sequence[int],
    price_per_hour: float,
    decoding: DecodingConfig | None = None,
) -> ServingResult:
    warm_up(engine, tokens, prompt_lengths, cfg.max_batch, stream=continuous(cfg, engine),
            prefill_chunk=cfg.prefill_chunk)
    system = engine_system(engine, cfg, tokens, list(prompt_lengths), list(output_lengths), decoding)
    capacity = find_capacity(system, start_rps=cfg.rate_rps, min_attainment=cfg.min_attainment, max_probes=MAX_PROBES)
    peak = cfg.peak_rate_rps or cfg.rate_rps
    report = capacity.report
    tokens = expected_output_tokens(list(output_lengths))
    cost = cost_at_load(capacity, peak, price_per_hour, tokens) if report is not None else None
    classes = {}
    if report is not None:
        for c in report.classes:
            classes[c.name] = ServingClassResult(
                slo_ms=c.slo_ms,
                e2e_p99_ms=c.e2e.p99,
                ttft_p99_ms=c.ttft.p99,
                queue_p99_ms=c.queue.p99,
                attainment=c.attainment,
                goodput_rps=c.goodput_rps,
                rejected=c.rejected,
                offered=c.offered,
                completed=c.completed,
                itl_max_p99_ms=c.itl_max.p99,
                ttft_slo_ms=c.ttft_slo_ms,
                itl_slo_ms=c.itl_slo_ms,
            )
    return ServingResult(
        capacity_rps=capacity.rate_rps,
        converged=capacity.converged,
        probes=len(capacity.probes),
        max_batch=cfg.max_batch,
        occupancy=report.occupancy if report else None,
        peak_rate_rps=peak,
        replicas=cost.replicas if cost else None,
        usd_per_day=cost.usd_per_day if cost else None,
        usd_per_1m_output_tokens_at_peak=cost.usd_per_million_tokens_at_peak if cost else None,
        classes=classes,
        load_curve=[_point(p) for p in capacity.probes],
        warmup_s=cfg.warmup_s,
        judged_s=cfg.duration_s,
        min_judged=cfg.min_judged,
        mixed_lengths=mixes_lengths(cfg, engine),
        continuous=continuous(cfg, engine),
    )


def _point(p: Probe) -> ServingProbe:
    r = p.report
    span = max(r.duration_s, r.overall.offered / r.rate_rps)  # a last arrival early in its window ends the run early
    return ServingProbe(
        rate_rps=p.rate_rps,
        holds=p.holds,
        why_not=list(p.why_not),
        completed_rps=r.overall.completed / span if span > 0 else 0.0,
        e2e_p99_ms={c.name: c.e2e.p99 for c in r.classes},
        completed={c.name: c.completed for c in r.classes},
        utilization=r.utilization,
        ttft_p99_ms={c.name: c.ttft.p99 for c in r.classes},
        itl_max_p99_ms={c.name: c.itl_max.p99 for c in r.classes},
    )
