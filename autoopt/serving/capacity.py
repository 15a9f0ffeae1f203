"""Capacity: the highest offered rate at which every class with an SLO holds it, found by raising the rate, then
narrowing the bracket; the replicas a peak rate needs; and what that costs.

A rate "holds" when the run completed at least one request (a rate so low that none arrived within
`duration_s` shows nothing), did not saturate, kept up with it — the engine ran batches for no longer than
the arrivals lasted (utilization <= 1), and the backlog cleared within the drain bound after the last
arrival, so no class (best effort included) was left a growing queue that a short probe would hide — and,
for every class with an SLO that was offered requests, the p99 of each figure it sets a deadline on (end-to-end
latency, TTFT, the longest wait between two tokens) <= that deadline and attainment >= `min_attainment`. The
drain bound is the latest any class's last token may come while meeting its deadlines (`last_token_bound_ms`;
BEST_EFFORT_DRAIN_S where no class bounds it). It alone would let a probe of T seconds hold up to
(1 + drain bound / T) times the rate the engine completes; utilization compares the work offered with the time
it had. Best-effort rejections count against nothing here: read them in the report. A probe's figures count the
requests sent after its warm-up (see `autoopt.serving.runner`), its utilization all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from autoopt.config.serving import DEADLINES
from autoopt.serving.metrics import ClassMetrics, ServingReport

BEST_EFFORT_DRAIN_S = 1.0  # the drain bound when no class bounds its last token
SAFEGUARD = 0.1  # an interpolated probe stays this share of the bracket away from either end
# While every probe holds, the next aims where utilization, taken as proportional to the rate, would reach
# JUMP_UTILIZATION: at least twice the rate, at most MAX_JUMP times.
JUMP_UTILIZATION = 0.5
MAX_JUMP = 8.0
System = Callable[[float], ServingReport]  # offered rate (requests/s) -> one bounded open-loop run


def violations(report: ServingReport, min_attainment: float) -> list[str]:
    """Why `report` does not hold its SLOs (empty when it does)."""
    problems = [f"saturated: {report.saturation_reason}"] if report.saturated else []
    if report.overall.completed == 0:
        problems.append(f"no request completed ({report.overall.offered} offered within the run): it shows nothing")
    if report.utilization > 1.0:
        problems.append(
            f"not sustained: the engine was busy {report.busy_s:.2f}s running batches, "
            f"{report.utilization:.1%} of the arrival window: it completes less than the offered rate"
        )
    bounds = [b for b in map(last_token_bound_ms, report.classes) if b is not None]
    drain_bound_s = max(bounds) / 1e3 if bounds else BEST_EFFORT_DRAIN_S
    if report.drain_s > drain_bound_s:
        problems.append(
            f"not sustained: the backlog took {report.drain_s:.2f}s to clear after the last arrival "
            f"(> {drain_bound_s:.2f}s, the latest a last token may come within its class's deadlines)"
        )
    for c in report.classes:
        deadlines = [(getattr(c, name), DEADLINES[name], c.bounded(name)) for name in DEADLINES if getattr(c, name) > 0]
        if not deadlines or c.offered == 0:
            continue
        for deadline, figure, latency in deadlines:
            if c.completed == 0 or (latency.p99 is not None and latency.p99 > deadline):
                p99 = "none completed" if c.completed == 0 else f"{latency.p99:.0f} ms"
                problems.append(f"{c.name} {figure} p99 {p99} > {deadline:.0f} ms")
        if c.attainment < min_attainment:
            problems.append(f"{c.name} attainment {c.attainment:.3f} < {min_attainment}")
    return problems


def last_token_bound_ms(c: ClassMetrics) -> float | None:
    """The latest after its send time a request of class `c` may get its last token and meet every deadline: the
    e2e deadline, else the first-token deadline plus the class's longest reply's other tokens at the stall deadline
    each; None where the class bounds neither (best effort, or a first-token or stall deadline alone)."""
    if c.slo_ms > 0:
        return c.slo_ms
    if c.ttft_slo_ms > 0 and c.itl_slo_ms > 0:
        return c.ttft_slo_ms + max(c.longest_reply - 1, 0) * c.itl_slo_ms
    return None


@dataclass(frozen=True)
class Probe:
    rate_rps: float
    holds: bool
    why_not: tuple[str, ...]
    report: ServingReport  # the run at that rate: the load curve's point


@dataclass(frozen=True)
class Capacity:
    """`rate_rps` is the highest probed rate that held (0 if none did); `report` is that probe's run."""

    rate_rps: float
    report: ServingReport | None
    probes: tuple[Probe, ...]
    tolerance: float
    converged: bool  # bracket within `tolerance` (False: the probe budget ran out first)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["report"] = self.report.to_dict() if self.report else None
        return data


def find_capacity(
    system: System,
    *,
    start_rps: float,
    min_attainment: float = 0.99,
    tolerance: float = 0.05,
    max_probes: int = 16,
    min_rps: float = 1e-3,
) -> Capacity:
    """Raise the rate from `start_rps` while the SLOs hold (see `next_up`; halve while they do not), then narrow the
    bracket [highest holding, lowest failing] until (high - low) / high <= `tolerance`: at the rate where
    utilization reaches 1 (see `next_rate`) when the failing end ran over it, at the middle otherwise."""
    if start_rps <= 0:
        raise ValueError(f"start_rps={start_rps} must be positive")
    probes: list[Probe] = []
    best: tuple[float, ServingReport] | None = None
    reports: dict[float, ServingReport] = {}

    def probe(rate: float) -> bool:
        nonlocal best
        report = reports[rate] = system(rate)
        why = violations(report, min_attainment)
        probes.append(Probe(rate, not why, tuple(why), report))
        if not why and (best is None or rate > best[0]):
            best = (rate, report)
        return not why

    low, high = 0.0, math.inf
    rate = start_rps
    while len(probes) < max_probes and math.isinf(high):  # bracket from above
        if probe(rate):
            low, rate = rate, next_up(rate, reports[rate].utilization)
        else:
            high = rate
    while len(probes) < max_probes and low == 0.0 and high > min_rps:  # bracket from below
        rate = high / 2
        if probe(rate):
            low = rate
        else:
            high = rate
    while len(probes) < max_probes and low > 0 and (high - low) / high > tolerance:
        rate = next_rate(low, high, reports[low].utilization, reports[high].utilization)
        if probe(rate):
            low = rate
        else:
            high = rate
    converged = low > 0 and not math.isinf(high) and (high - low) / high <= tolerance
    return Capacity(
        rate_rps=best[0] if best else 0.0,
        report=best[1] if best else None,
        probes=tuple(probes),
        tolerance=tolerance,
        converged=converged,
    )


def next_up(rate: float, utilization: float) -> float:
    """The rate to probe after `rate` held at `utilization`: where utilization would reach JUMP_UTILIZATION, at least
    double (as with no utilization to go by) and at most MAX_JUMP times `rate`. A probe far below capacity thus
    skips doublings that would hold anyway (a probe of workload=serve offers 8 s of traffic). The step is larger
    than a doubling only after a probe that left the engine mostly idle, where requests take a small share of
    their arrival gap and an SLO breaks mostly through queueing, near saturation. Where an SLO breaks far below
    saturation instead (a latency spent outside the engine's batches), a jump overshoots it into a wide bracket,
    which costs up to two probes more than doubling would have."""
    if utilization <= 0:
        return rate * 2
    return rate * min(MAX_JUMP, max(2.0, JUMP_UTILIZATION / utilization))


def next_rate(low: float, high: float, u_low: float, u_high: float) -> float:
    """The next rate to probe inside [low, high] (low held, high failed): where utilization, taken as linear in
    the rate between the two, reaches 1, when high ran over 1 (kept SAFEGUARD of the bracket from either end, so
    that it always narrows); the middle when high failed on its SLOs alone, which says nothing of where."""
    if not u_low < 1.0 < u_high:
        return (low + high) / 2
    crossing = low + (1.0 - u_low) / (u_high - u_low) * (high - low)
    margin = SAFEGUARD * (high - low)
    return min(max(crossing, low + margin), high - margin)


@dataclass(frozen=True)
class CostAtLoad:
    """Replicas for the peak rate and what they cost. Token figures use the workload's expected output tokens
    per request, not the capacity run's sample of them: every candidate serves the same traffic, so only its
    replicas may change its cost (the sample differs from rate to rate and would make equal costs differ)."""

    peak_rate_rps: float
    capacity_rps: float
    replicas: int
    usd_per_day: float  # all replicas, on-demand, 24 h
    usd_per_million_tokens_at_capacity: float  # one replica kept at its capacity rate
    usd_per_million_tokens_at_peak: float  # the replicas serving exactly the peak rate
    notes: dict[str, Any] = field(default_factory=dict)


def replicas_needed(peak_rate_rps: float, capacity_rps: float) -> int:
    if capacity_rps <= 0:
        raise ValueError(f"capacity_rps={capacity_rps}: no rate held the SLOs, so no replica count serves the peak")
    return max(1, math.ceil(peak_rate_rps / capacity_rps - 1e-9))


def cost_at_load(capacity: Capacity, peak_rate_rps: float, price_per_hour: float, tokens_per_request: float) -> CostAtLoad:
    if capacity.report is None or capacity.rate_rps <= 0:
        raise ValueError("no probed rate held the SLOs; lower the load, relax the SLOs or pick a faster candidate")
    replicas = replicas_needed(peak_rate_rps, capacity.rate_rps)

    def per_million(hourly: float, rate: float) -> float:
        return hourly / (rate * tokens_per_request * 3600.0) * 1e6

    return CostAtLoad(
        peak_rate_rps=peak_rate_rps,
        capacity_rps=capacity.rate_rps,
        replicas=replicas,
        usd_per_day=replicas * price_per_hour * 24.0,
        usd_per_million_tokens_at_capacity=per_million(price_per_hour, capacity.rate_rps),
        usd_per_million_tokens_at_peak=per_million(replicas * price_per_hour, peak_rate_rps),
        notes={"price_per_hour": price_per_hour, "output_tokens_per_request": tokens_per_request},
    )
