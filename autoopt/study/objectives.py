"""What a study minimizes and what it requires of a candidate."""

from __future__ import annotations

import math

from autoopt.config.schema import SearchConfig, TargetConfig
from autoopt.result import MeasureResult, ServingResult

# A reference-point axis that leaves the front no room (every cost 0 on a target priced at 0, every loss 0 under a
# bar of top-1 1.0) is given this much, so the volume still ranks fronts by the other two objectives.
_THIN_SLAB = 1e-9


def hypervolume_reference(latency: float, cost: float, search: SearchConfig) -> tuple[float, float, float]:
    """The point a front's hypervolume is measured from: the fp32 reference's latency (or -capacity) and cost,
    and the accuracy bar's loss."""
    return (latency, max(cost, _THIN_SLAB), max(1.0 - search.min_top1_agreement, _THIN_SLAB))


def speed_objective(search: SearchConfig) -> str:
    """What the first objective measures, in words: latency, or capacity (minimized as -capacity)."""
    return "capacity" if search.objective == "serving" else "latency"


def objective_labels(search: SearchConfig) -> tuple[str, str, str]:
    loss = "accuracy_loss (1 - agreement: top-1, or sampled where the workload samples)"
    if search.objective == "serving":
        return ("-capacity_rps (open loop, every SLO held)", "usd_per_1m_output_tokens at the peak rate", loss)
    kind, pct = search.latency.split("_")
    return (f"latency_ms ({kind} {pct}, warm)", "usd_per_1m_output_tokens", loss)


def objectives(r: MeasureResult, search: SearchConfig) -> tuple[float, float, float]:
    """All minimized. latency: (latency in ms, USD per 1M output tokens, 1 - agreement with the fp32 reference:
    top-1, or sampled under a sampling workload, `AccuracyResult.agreement`); serving: (-capacity in requests/s, USD
    per 1M output tokens serving the peak rate, the same accuracy loss)."""
    loss = 1.0 - r.accuracy.agreement
    if search.objective == "serving":
        s = _serving(r)
        cost = s.usd_per_1m_output_tokens_at_peak
        return (-s.capacity_rps, math.inf if cost is None else cost, loss)
    kind, pct = search.latency.split("_")
    lat = getattr(getattr(r.speed, f"{kind}_ms"), pct)
    return (lat, r.cost.usd_per_1m_output_tokens, loss)


def _serving(r: MeasureResult) -> ServingResult:
    if r.serving is None:
        raise ValueError("search.objective=serving needs measurements with serving figures; this one has none")
    return r.serving


def constraints(r: MeasureResult, search: SearchConfig, target: TargetConfig) -> dict[str, float]:
    """Optuna constraint values: a candidate is feasible when every value is <= 0.

    accuracy_bar = bar (`search.min_top1_agreement`) - agreement (top-1, or sampled under a sampling workload: its
    generalization, which top-1 is at temperature 0); decode_bar (only with `search.min_decode_prefix_agreement` > 0) =
    that bar - the decode path's prefix agreement (1.0 = identical greedy output); decode_self (with
    `search.min_decode_self_agreement` > 0, on results that measured it) = that bar - the share of its decode
    path's tokens its own teacher-forced logits pick, so that the top-1 bar speaks for the path it decodes with;
    memory = memory used - the target's memory (GB), where memory
    used is the process's peak RSS on CPU targets and the accelerator's peak on GPU targets. An engine
    that cannot report its accelerator peak gets no memory constraint (never host RSS against GPU memory);
    `memory_unmeasured` = 0 records that. With the serving objective, `serving_slos` requires that some
    offered rate held every class's SLO.
    """
    values = {"accuracy_bar": search.min_top1_agreement - r.accuracy.agreement}
    if search.min_decode_prefix_agreement > 0:
        values["decode_bar"] = search.min_decode_prefix_agreement - r.accuracy.decode_prefix_agreement
    if search.min_decode_self_agreement > 0 and r.accuracy.decode_self_agreement is not None:
        values["decode_self"] = search.min_decode_self_agreement - r.accuracy.decode_self_agreement
    if search.objective == "serving":
        values["serving_slos"] = 0.0 if _serving(r).capacity_rps > 0 else 1.0  # some rate held every SLO
    used_mb = r.memory.peak_rss_mb if target.device == "cpu" else r.memory.device_peak_mb
    if used_mb is None:
        values["memory_unmeasured"] = 0.0
    else:
        values["memory"] = used_mb / 1024 - target.memory_gb
    return values
