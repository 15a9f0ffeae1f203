"""Token choice for sampling rows: the settings' ranges, the distribution a row draws from, repeatable seeds, and a
batch without sampling rows left exactly as the engine's argmax made it."""

from __future__ import annotations

import numpy as np
import pytest

from autoopt.engines.sampling import RowSampler, Sampling, _draw, _nucleus, pick, row_samplers

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))


def draws(sampling: Sampling, n: int = 20000, logits: np.ndarray = LOGITS) -> np.ndarray:
    sampler = RowSampler(sampling)
    return np.bincount([sampler.choose(logits) for _ in range(n)], minlength=logits.size) / n


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"temperature": -0.1}, "temperature"), ({"temperature": 2.5}, "temperature"), ({"top_p": 0.0}, "top_p"),
     ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k")],
)
def test_settings_out_of_range_are_refused_naming_the_field(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Sampling(**kwargs)


def test_temperature_zero_or_top_k_one_is_greedy_and_needs_no_sampler() -> None:
    assert Sampling().greedy and Sampling(temperature=0.8, top_k=1).greedy
    assert not Sampling(temperature=0.8).greedy
    with pytest.raises(ValueError, match="greedy"):
        RowSampler(Sampling())


def test_temperature_one_draws_from_the_softmax_of_the_logits() -> None:
    freq = draws(Sampling(temperature=1.0, seed=0))
    np.testing.assert_allclose(freq, np.exp(LOGITS), atol=0.015)  # 20000 draws: 3 standard errors ~ 0.011


def test_a_lower_temperature_sharpens_the_distribution_as_softmax_of_logits_over_t() -> None:
    freq = draws(Sampling(temperature=0.5, seed=1))
    want = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    np.testing.assert_allclose(freq, want, atol=0.015)


def test_the_nucleus_is_cut_from_the_tempered_distribution() -> None:
    # At temperature 0.5 the two likeliest tokens hold 0.88 of the mass (untempered: 0.7, and top_p 0.8 would keep 3)
    freq = draws(Sampling(temperature=0.5, top_p=0.8, seed=5))
    assert freq[2:].sum() == 0 and freq[1] > 0


def test_top_k_keeps_the_k_likeliest_tokens_renormalized() -> None:
    freq = draws(Sampling(temperature=1.0, top_k=2, seed=2))
    assert freq[2:].sum() == 0
    np.testing.assert_allclose(freq[:2], [0.5 / 0.7, 0.2 / 0.7], atol=0.015)


def test_top_p_keeps_the_fewest_likeliest_tokens_whose_mass_reaches_it() -> None:
    freq = draws(Sampling(temperature=1.0, top_p=0.8, seed=3))  # 0.5 + 0.2 < 0.8 <= 0.5 + 0.2 + 0.15
    assert freq[3:].sum() == 0
    np.testing.assert_allclose(freq[:3], np.array([0.5, 0.2, 0.15]) / 0.85, atol=0.015)


@pytest.mark.parametrize("first", [1, 5, 64, 5000])
def test_the_nucleus_is_the_full_sorts_whether_the_first_tokens_reach_top_p_or_not(first: int) -> None:
    rng = np.random.default_rng(first)
    for _ in range(100):
        scores = (rng.normal(size=int(rng.integers(2, 3000))) * rng.uniform(0.1, 5)).astype(np.float32)
        weights = np.exp(scores.astype(np.float64))
        top_p = rng.uniform(0.05, 0.999)
        order = np.argsort(-weights, kind="stable")
        want = order[: int(np.searchsorted(np.cumsum(weights[order]), top_p * weights.sum())) + 1]
        np.testing.assert_array_equal(_nucleus(scores, weights, top_p, first), want)


@pytest.mark.parametrize("size", [3, 4096, 4097, 151936])
def test_the_blockwise_draw_finds_the_index_a_full_cumulative_sum_does(size: int) -> None:
    rng = np.random.default_rng(size)
    weights = np.exp(rng.normal(size=size) * 3)
    weights[rng.integers(0, size, size // 3)] = 0.0  # tokens cut by top_k or lost to underflow are never drawn
    cumulative = np.cumsum(weights)
    for u in rng.random(500):
        index = _draw(weights, u)
        assert index == np.searchsorted(cumulative, u * cumulative[-1], side="right") and weights[index] > 0


def test_a_tiny_top_p_leaves_only_the_argmax() -> None:
    assert draws(Sampling(temperature=2.0, top_p=0.01, seed=4), n=200)[0] == 1.0


def test_the_same_seed_draws_the_same_tokens_and_another_seed_others() -> None:
    logits = np.random.default_rng(0).normal(size=1000)
    one, again, other = (RowSampler(Sampling(temperature=1.0, seed=s)) for s in (7, 7, 8))
    a = [one.choose(logits) for _ in range(50)]
    assert a == [again.choose(logits) for _ in range(50)]
    assert a != [other.choose(logits) for _ in range(50)]


def test_positive_infinite_logits_take_all_the_mass_and_nan_or_all_negative_infinite_are_refused() -> None:
    sampler = RowSampler(Sampling(temperature=1.0, seed=0))
    assert {sampler.choose(np.array([0.0, np.inf, 1.0, np.inf, 2.0])) for _ in range(50)} == {1, 3}
    for bad in ([0.0, np.nan, 1.0], [-np.inf, -np.inf]):
        with pytest.raises(ValueError, match="NaN or are all -inf"):
            sampler.choose(np.array(bad))


def test_a_negative_seed_is_taken() -> None:
    assert RowSampler(Sampling(temperature=1.0, seed=-5)).choose(LOGITS) in range(LOGITS.size)


def test_pick_without_sampling_rows_returns_the_argmax_untouched_and_reads_no_logits() -> None:
    greedy = np.array([3, 1], dtype=np.int64)

    def logits_of(rows: list[int]) -> np.ndarray:
        raise AssertionError("a greedy batch must not copy logits")

    assert pick(greedy, [None, None], logits_of) is greedy


def test_pick_replaces_only_the_sampling_rows_and_reads_only_their_logits() -> None:
    greedy = np.array([0, 0, 0], dtype=np.int64)
    asked: list[list[int]] = []

    def logits_of(rows: list[int]) -> np.ndarray:
        asked.append(rows)
        return np.tile(np.array([0.0, -np.inf, 0.0, -np.inf]), (len(rows), 1))

    samplers = [None, RowSampler(Sampling(temperature=1.0, seed=0)), None]
    tokens = pick(greedy, samplers, logits_of)
    assert asked == [[1]] and tokens[0] == tokens[2] == 0 and tokens[1] in (0, 2)
    assert greedy.tolist() == [0, 0, 0]


def test_a_row_with_a_number_of_draws_takes_the_argmax_after_them_and_costs_no_logits() -> None:
    limited = RowSampler(Sampling(temperature=1.0, seed=0, draws=2))
    asked: list[list[int]] = []

    def logits_of(rows: list[int]) -> np.ndarray:
        asked.append(rows)
        return np.zeros((len(rows), 4))

    for _ in range(4):
        pick(np.array([3], dtype=np.int64), [limited], logits_of)
    assert asked == [[0], [0]] and not limited.drawing


def test_an_engine_that_cannot_sample_refuses_a_sampling_row_but_takes_greedy_ones() -> None:
    assert row_samplers("e", False, [None, Sampling(), Sampling(temperature=1.0, top_k=1)], 3) == [None] * 3
    with pytest.raises(ValueError, match="engine e decodes greedily only"):
        row_samplers("e", False, [None, Sampling(temperature=0.7)], 2)
    with pytest.raises(ValueError, match="2 entries for 3 rows"):
        row_samplers("e", True, [None, None], 3)
