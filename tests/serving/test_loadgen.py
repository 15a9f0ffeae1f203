from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from autoopt.config.serving import ServingConfig
from autoopt.serving.loadgen import make_arrivals, unit_gaps

TOKENS = np.arange(5000, dtype=np.int64)


def test_same_seed_gives_identical_arrivals_and_another_seed_does_not() -> None:
    cfg = ServingConfig(max_requests=50, duration_s=1e9)
    a = make_arrivals(cfg, TOKENS, [16, 32], [4, 8])
    b = make_arrivals(cfg, TOKENS, [16, 32], [4, 8])
    c = make_arrivals(ServingConfig(max_requests=50, duration_s=1e9, seed=1), TOKENS, [16, 32], [4, 8])
    key = [(x.time_s, x.cls, x.prompt_ids.tolist(), x.max_new_tokens) for x in a]
    assert key == [(x.time_s, x.cls, x.prompt_ids.tolist(), x.max_new_tokens) for x in b]
    assert key != [(x.time_s, x.cls, x.prompt_ids.tolist(), x.max_new_tokens) for x in c]


def test_a_higher_rate_offers_the_same_requests_compressed_in_time() -> None:
    cfg = ServingConfig(max_requests=40, duration_s=1e9)
    slow, fast = make_arrivals(cfg, TOKENS, [16], [4], 2.0), make_arrivals(cfg, TOKENS, [16], [4], 8.0)
    assert [a.cls for a in slow] == [a.cls for a in fast]
    assert np.allclose([a.time_s / 4 for a in slow], [a.time_s for a in fast])


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 3.0)])
def test_mean_rate_matches_target_and_gamma_is_burstier(arrival: str, burstiness: float) -> None:
    gaps = unit_gaps(arrival, burstiness, 20000, np.random.default_rng(0))
    assert gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(burstiness, rel=0.1)


def test_bounded_by_requests_and_by_duration_with_class_mix_and_lengths_from_workload() -> None:
    cfg = ServingConfig(rate_rps=100.0, max_requests=2000, duration_s=5.0)
    arrivals = make_arrivals(cfg, TOKENS, [16, 32], [4, 8])
    assert len(arrivals) == 500 and arrivals[-1].time_s < 5.0
    assert len(make_arrivals(ServingConfig(rate_rps=100.0, max_requests=30), TOKENS, [16], [4])) == 30
    shares = {c.name: c.share for c in cfg.classes}
    for name, share in shares.items():
        assert sum(a.cls == name for a in arrivals) / len(arrivals) == pytest.approx(share, abs=0.06)
    assert {a.prompt_len for a in arrivals} == {16, 32} and {a.max_new_tokens for a in arrivals} == {4, 8}
    first = arrivals[0]
    start = int(first.prompt_ids[0])
    assert first.prompt_ids.tolist() == list(range(start, start + first.prompt_len))  # a window of the stream


def test_a_capacity_probe_offers_its_rate_for_the_whole_duration_not_a_burst() -> None:
    from autoopt.serving.runner import probe_arrivals

    cfg = ServingConfig(duration_s=6.0, warmup_s=2.0, max_requests=80)
    tokens = np.arange(1000, dtype=np.int64)

    slow = probe_arrivals(cfg, tokens, [16], [4], rate_rps=5.0)
    fast = probe_arrivals(cfg, tokens, [16], [4], rate_rps=200.0)

    # After the 2 s warm-up, exactly rate x 6 s requests over 6 s.
    assert sum(a.time_s >= 2.0 for a in slow) == 30 and slow[-1].time_s < 8.0
    assert sum(a.time_s >= 2.0 for a in fast) == 1200 and 7.9 < fast[-1].time_s < 8.0
    assert 300 < sum(a.time_s < 2.0 for a in fast) < 500  # the warm-up: a Poisson count around 400


def test_a_probe_at_a_low_rate_runs_long_enough_to_judge_min_judged_requests() -> None:
    from autoopt.serving.runner import probe_arrivals

    cfg = ServingConfig(duration_s=6.0, warmup_s=2.0, min_judged=20)
    tokens = np.arange(1000, dtype=np.int64)

    low = [a for a in probe_arrivals(cfg, tokens, [16], [4], rate_rps=1.0) if a.time_s >= 2.0]
    assert len(low) == 20 and 8.0 < low[-1].time_s < 22.0  # 20 s of judged arrivals at 1 req/s, not 6
    high = [a for a in probe_arrivals(cfg, tokens, [16], [4], rate_rps=5.0) if a.time_s >= 2.0]
    assert len(high) == 30 and high[-1].time_s < 8.0  # 6 s already offer more than 20
    assert [a.time_s for a in high] == [a.time_s for a in probe_arrivals(replace(cfg, min_judged=0), tokens, [16], [4],
                                                                         rate_rps=5.0) if a.time_s >= 2.0]
    capped = [a for a in probe_arrivals(cfg, tokens, [16], [4], rate_rps=0.1) if a.time_s >= 2.0]
    assert len(capped) == round(0.1 * 8 * 6.0)  # 200 s would offer 20; the judged phase stops at 8 x duration_s


@pytest.mark.parametrize("arrival", ["poisson", "gamma"])
def test_a_run_at_rate_r_offers_r_times_its_duration_whatever_the_seed(arrival: str) -> None:
    """A free seeded count is off from rate x duration by its own luck, the same way at every rate."""
    for seed in range(8):
        cfg = ServingConfig(duration_s=6.0, max_requests=10_000, seed=seed, arrival=arrival, burstiness=3.0)
        arrivals = make_arrivals(cfg, TOKENS, [16], [4], rate_rps=5.0)

        assert len(arrivals) == 30
        assert arrivals[0].time_s > 0.0 and arrivals[-1].time_s < 6.0
        assert [a.time_s for a in arrivals] == sorted(a.time_s for a in arrivals)


def test_every_count_offers_the_same_first_requests() -> None:
    """Bisection compares rates: the requests it offers at a higher rate begin with those of the lower one."""
    cfg = ServingConfig(duration_s=6.0, max_requests=10_000)
    low, high = make_arrivals(cfg, TOKENS, [16, 32], [4, 8], 5.0), make_arrivals(cfg, TOKENS, [16, 32], [4, 8], 5.5)

    assert (len(low), len(high)) == (30, 33)
    assert [(a.cls, a.prompt_ids.tolist(), a.max_new_tokens) for a in low] == [
        (a.cls, a.prompt_ids.tolist(), a.max_new_tokens) for a in high[:30]]
