"""What a study minimizes and what it requires of a candidate."""

from __future__ import annotations

from autoopt.config.schema import SearchConfig, TargetConfig
from autoopt.result import MeasureResult

OBJECTIVE_NAMES = ("latency_ms", "usd_per_1m_tokens", "accuracy_loss")


def objective_labels(latency: str) -> tuple[str, str, str]:
    kind, pct = latency.split("_")
    return (f"latency_ms ({kind} {pct}, warm)", "usd_per_1m_output_tokens", "accuracy_loss (1 - top-1 agreement)")


def objectives(r: MeasureResult, latency: str) -> tuple[float, float, float]:
    """(latency in ms, USD per 1M output tokens, 1 - top-1 agreement with the fp32 reference)."""
    kind, pct = latency.split("_")
    lat = getattr(getattr(r.speed, f"{kind}_ms"), pct)
    return (lat, r.cost.usd_per_1m_output_tokens, 1.0 - r.accuracy.top1_agreement)


def constraints(r: MeasureResult, search: SearchConfig, target: TargetConfig) -> dict[str, float]:
    """Optuna constraint values: a candidate is feasible when every value is <= 0.

    accuracy_bar = bar - top-1 agreement; memory = memory used - the target's memory (GB), where memory
    used is the process's peak RSS on CPU targets and the accelerator's peak on GPU targets. An engine
    that cannot report its accelerator peak gets no memory constraint (never host RSS against GPU memory);
    `memory_unmeasured` = 0 records that.
    """
    values = {"accuracy_bar": search.min_top1_agreement - r.accuracy.top1_agreement}
    used_mb = r.memory.peak_rss_mb if target.device == "cpu" else r.memory.device_peak_mb
    if used_mb is None:
        values["memory_unmeasured"] = 0.0
    else:
        values["memory"] = used_mb / 1024 - target.memory_gb
    return values
