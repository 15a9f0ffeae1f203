"""Summaries of timing samples: percentiles with the sample count and spread, never a bare mean.

Requests of different shapes (prompt length, output length, batch) have different latencies by
design, so spread across shapes is not noise: noise is the coefficient of variation across repeats
of the same shape, reported per shape and pooled as the median over shapes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autoopt.result import Percentiles, ShapeStats

if TYPE_CHECKING:
    from autoopt.bench.latency import RequestTiming


def summarize_ms(seconds: Sequence[float]) -> Percentiles:
    """Percentiles (linear interpolation) of samples given in seconds, reported in milliseconds."""
    if not seconds:
        raise ValueError("no samples to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    cv = float(ms.std(ddof=1) / mean) if len(ms) > 1 and mean > 0 else 0.0
    return Percentiles(p50=p50, p90=p90, p99=p99, mean=mean, cv=cv, n=len(ms))


@dataclass(frozen=True)
class SpeedStats:
    """Overall percentiles over every timed request, per-shape percentiles, and within-shape noise.

    The overall Percentiles keep `summarize_ms` semantics: their cv mixes the spread between shapes
    with noise. `*_cv_within_shape_median` is the median over shapes of the per-shape cv, taken over
    shapes timed at least twice; None when no shape was.
    """

    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    shapes: list[ShapeStats]
    ttft_cv_within_shape_median: float | None
    tpot_cv_within_shape_median: float | None
    e2e_cv_within_shape_median: float | None


def _tpots(timings: Sequence[RequestTiming]) -> list[float]:
    tpots = [t.tpot_s for t in timings if t.tpot_s is not None]
    if not tpots:
        raise ValueError("no request generated 2 or more tokens, so TPOT is undefined; use output lengths >= 2")
    return tpots


def _median_cv(shapes: list[ShapeStats], metric: str) -> float | None:
    cvs = [getattr(s, metric).cv for s in shapes if getattr(s, metric).n > 1]
    return float(np.median(cvs)) if cvs else None


def summarize_shapes(timings: Sequence[RequestTiming]) -> SpeedStats:
    """Group timed requests by (prompt_len, output_len, batch), ordered by that key, and summarize."""
    if not timings:
        raise ValueError("no timed requests to summarize")
    groups: dict[tuple[int, int, int], list[RequestTiming]] = defaultdict(list)
    for t in timings:
        groups[t.shape].append(t)
    shapes = [
        ShapeStats(
            prompt_len=p,
            output_len=n,
            batch=b,
            ttft_ms=summarize_ms([t.ttft_s for t in group]),
            tpot_ms=summarize_ms(_tpots(group)),
            e2e_ms=summarize_ms([t.e2e_s for t in group]),
        )
        for (p, n, b), group in sorted(groups.items())
    ]
    return SpeedStats(
        ttft_ms=summarize_ms([t.ttft_s for t in timings]),
        tpot_ms=summarize_ms(_tpots(timings)),
        e2e_ms=summarize_ms([t.e2e_s for t in timings]),
        shapes=shapes,
        ttft_cv_within_shape_median=_median_cv(shapes, "ttft_ms"),
        tpot_cv_within_shape_median=_median_cv(shapes, "tpot_ms"),
        e2e_cv_within_shape_median=_median_cv(shapes, "e2e_ms"),
    )
