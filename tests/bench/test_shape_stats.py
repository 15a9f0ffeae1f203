from __future__ import annotations

import pytest

from autoopt.bench.latency import RequestTiming
from autoopt.bench.stats import summarize_shapes
from autoopt.config.serde import from_dict, to_dict
from autoopt.result import ShapeStats


def _timing(prompt_len: int, e2e_s: float, new_tokens: int = 5) -> RequestTiming:
    return RequestTiming(ttft_s=e2e_s / 2, e2e_s=e2e_s, batch=1, new_tokens=new_tokens, prompt_len=prompt_len)


def test_cv_within_shape_ignores_the_spread_between_shapes() -> None:
    timings = [_timing(16, 0.010), _timing(256, 0.100)] * 4  # each shape perfectly steady

    stats = summarize_shapes(timings)

    assert stats.e2e_ms.cv > 0.5  # the overall figure mixes a 10x shape difference
    assert stats.e2e_cv_within_shape_median == 0.0
    assert stats.ttft_cv_within_shape_median == 0.0


def test_percentiles_are_reported_per_shape_in_key_order() -> None:
    timings = [_timing(256, 0.100), _timing(16, 0.010), _timing(16, 0.030), _timing(256, 0.100, new_tokens=9)]

    stats = summarize_shapes(timings)

    assert [(s.prompt_len, s.output_len, s.batch) for s in stats.shapes] == [(16, 5, 1), (256, 5, 1), (256, 9, 1)]
    assert [s.e2e_ms.n for s in stats.shapes] == [2, 1, 1]
    assert stats.shapes[0].e2e_ms.p50 == pytest.approx(20.0)
    assert stats.e2e_ms.n == 4


def test_pooled_cv_is_the_median_over_repeated_shapes_only() -> None:
    steady = [_timing(16, 0.010)] * 3
    noisy = [_timing(32, 0.010), _timing(32, 0.030)]
    single = [_timing(64, 0.5)]

    stats = summarize_shapes(steady + noisy + single)

    noisy_cv = next(s.e2e_ms.cv for s in stats.shapes if s.prompt_len == 32)
    assert noisy_cv > 0
    assert stats.e2e_cv_within_shape_median == pytest.approx(noisy_cv / 2)  # median of [0, noisy_cv]


def test_pooled_cv_is_none_when_no_shape_repeats() -> None:
    stats = summarize_shapes([_timing(16, 0.010), _timing(32, 0.020)])

    assert stats.e2e_cv_within_shape_median is None


def test_shape_stats_round_trip_through_a_dict() -> None:
    shape = summarize_shapes([_timing(16, 0.010), _timing(16, 0.012)]).shapes[0]

    assert from_dict(ShapeStats, to_dict(shape)) == shape


def test_single_token_outputs_are_refused_for_tpot() -> None:
    with pytest.raises(ValueError, match="output lengths >= 2"):
        summarize_shapes([_timing(16, 0.010, new_tokens=1)])
