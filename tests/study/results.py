"""Hand-made measurement records for testing what the study does with them (not how they are measured)."""

from __future__ import annotations

from pathlib import Path

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig
from autoopt.result import (
    AccuracyResult,
    Built,
    CostResult,
    MeasureResult,
    MemoryResult,
    Percentiles,
    SpeedResult,
)


def _pct(ms: float) -> Percentiles:
    return Percentiles(p50=ms, p90=ms, p99=ms, mean=ms, cv=0.0, n=6)


def result(e2e_ms: float, usd: float, top1: float, candidate: CandidateConfig | None = None, rss_mb: float = 200.0,
           reference_sha256: str = "ref") -> MeasureResult:
    return MeasureResult(
        candidate=candidate or CandidateConfig(),
        target="cpu",
        model={"name": "m"},
        runtime=RuntimeOptions(device="cpu", threads=2, max_length=64, max_batch=4, batch_size=1),
        build=Built(Path("/nonexistent"), "key", "sha", [], True, 0.0, 0.0),
        reference_sha256=reference_sha256,
        speed=SpeedResult(
            runs=6, cycles=6, seconds=1.0, burn_in_s=0.1, ttft_ms=_pct(e2e_ms / 4), tpot_ms=_pct(e2e_ms / 40),
            e2e_ms=_pct(e2e_ms), output_tokens_per_s=1000.0 / e2e_ms, load_s=0.1, compile_s=None, warmup="one", warmup_s=0.1,
            cold_first_request_ms=e2e_ms, shapes=[], ttft_cv_within_shape_median=0.01,
            tpot_cv_within_shape_median=0.01, e2e_cv_within_shape_median=None,
        ),
        memory=MemoryResult(peak_rss_mb=rss_mb, device_peak_mb=None, artifact_mb=10.0),
        accuracy=AccuracyResult(kl_mean=1 - top1, top1_agreement=top1, perplexity=10.0, reference_perplexity=10.0,
                                tokens=100, decode_prefix_agreement=top1, decode_token_agreement=top1, decode_tokens=128),
        cost=CostResult(usd_per_1m_output_tokens=usd, price_per_hour=0.1, target="cpu", price_source="test"),
    )
