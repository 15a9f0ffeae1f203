"""Dollars from measured throughput."""

from __future__ import annotations


def usd_per_million_tokens(price_per_hour: float, tokens_per_s: float) -> float:
    """USD per 1M output tokens for one instance of the target kept busy at `tokens_per_s`."""
    if tokens_per_s <= 0:
        raise ValueError(f"tokens_per_s must be positive, got {tokens_per_s}")
    if price_per_hour < 0:
        raise ValueError(f"price_per_hour must be non-negative, got {price_per_hour}")
    return price_per_hour / (tokens_per_s * 3600.0) * 1e6
