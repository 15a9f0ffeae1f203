from __future__ import annotations

import numpy as np
import pytest

from autoopt.bench.requests import make_requests
from autoopt.bench.stats import summarize_ms


def test_percentiles_are_ordered_and_in_milliseconds() -> None:
    p = summarize_ms([0.010, 0.020, 0.030, 0.040, 1.0])

    assert p.p50 == pytest.approx(30.0)
    assert p.p50 <= p.p90 <= p.p99 <= 1000.0
    assert p.n == 5
    assert p.cv > 1.0  # one outlier dominates the spread


def test_constant_samples_have_zero_spread() -> None:
    p = summarize_ms([0.005] * 4)

    assert p.cv == 0.0
    assert p.p99 == pytest.approx(5.0)


def test_requests_cover_every_length_pair_with_distinct_rows() -> None:
    tokens = np.arange(10_000)

    requests = make_requests(tokens, [16, 32], [4, 8], batch_size=3)

    assert sorted(r.shape for r in requests) == sorted((3, p, n) for p in (16, 32) for n in (4, 8))
    for r in requests:
        assert len({row[0] for row in r.input_ids.tolist()}) == 3
        assert r.input_ids.dtype == np.int64


def test_too_short_text_is_refused_naming_the_keys_and_the_fix() -> None:
    with pytest.raises(ValueError) as err:
        make_requests(np.arange(10), [8, 16], [4], batch_size=1)

    message = str(err.value)
    assert "workload.prompt_lengths" in message and "16" in message and "10 tokens" in message
    assert "workload.eval_text" in message and "\n" not in message
