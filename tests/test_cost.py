from __future__ import annotations

import pytest

from autoopt.cost import usd_per_million_tokens


def test_cost_is_price_over_tokens_per_hour_times_a_million() -> None:
    # $3.60/h at 1000 tok/s = 3.6M tokens per hour -> $1 per 1M tokens
    assert usd_per_million_tokens(3.60, 1000.0) == pytest.approx(1.0)


def test_doubling_throughput_halves_cost() -> None:
    assert usd_per_million_tokens(0.5, 200.0) == pytest.approx(2 * usd_per_million_tokens(0.5, 400.0))


def test_zero_throughput_is_an_error_not_infinity() -> None:
    with pytest.raises(ValueError, match="tokens_per_s must be positive"):
        usd_per_million_tokens(1.0, 0.0)
