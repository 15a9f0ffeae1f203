"""Summaries of timing samples: percentiles with the sample count and spread, never a bare mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoopt.result import Percentiles


def summarize_ms(seconds: Sequence[float]) -> Percentiles:
    """Percentiles (linear interpolation) of samples given in seconds, reported in milliseconds."""
    if not seconds:
        raise ValueError("no samples to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    cv = float(ms.std(ddof=1) / mean) if len(ms) > 1 and mean > 0 else 0.0
    return Percentiles(p50=p50, p90=p90, p99=p99, mean=mean, cv=cv, n=len(ms))
