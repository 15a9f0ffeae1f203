from __future__ import annotations

import numpy as np
import pytest

from autoopt.accuracy.metrics import fidelity, log_softmax, perplexity, sampled_agreement, sampling_distributions
from autoopt.config.schema import DecodingConfig
from autoopt.engines.sampling import RowSampler, Sampling


def test_identical_logits_agree_exactly() -> None:
    logits = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
    ids = np.zeros((2, 5), dtype=np.int64)

    f = fidelity(logits, logits.copy(), ids)

    assert f.kl_mean == 0.0
    assert f.top1_agreement == 1.0
    assert f.perplexity == f.reference_perplexity
    assert f.positions == 10


def test_kl_matches_hand_computed_two_token_case() -> None:
    ref = np.log(np.array([[[0.5, 0.5], [0.5, 0.5]]]))  # (1, 2, 2)
    cand = np.log(np.array([[[0.9, 0.1], [0.9, 0.1]]]))
    ids = np.zeros((1, 2), dtype=np.int64)
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)

    f = fidelity(ref, cand, ids)

    assert f.kl_mean == pytest.approx(expected, rel=1e-12)


def test_top1_agreement_counts_positions_with_same_argmax() -> None:
    ref = np.array([[[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]]])
    cand = np.array([[[2.0, 1.0], [3.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])

    f = fidelity(ref, cand, np.zeros((1, 4), dtype=np.int64))

    assert f.top1_agreement == 0.5


def test_perplexity_of_uniform_distribution_is_vocab_size() -> None:
    logprobs = log_softmax(np.zeros((1, 4, 10)))
    ids = np.array([[1, 2, 3, 4]])

    assert perplexity(logprobs, ids) == pytest.approx(10.0)


def test_perplexity_uses_next_token_targets() -> None:
    logits = np.full((1, 2, 3), -1e9)
    logits[0, 0, 2] = 0.0  # position 0 predicts token 2 with certainty
    assert perplexity(log_softmax(logits), np.array([[0, 2]])) == pytest.approx(1.0)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        fidelity(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)), np.zeros((1, 2), dtype=np.int64))


def test_sampled_agreement_is_one_minus_the_total_variation_of_what_each_samples() -> None:
    ref = np.log(np.array([[[0.5, 0.3, 0.2]]]))
    cand = np.log(np.array([[[0.2, 0.3, 0.5]]]))
    assert sampled_agreement(ref, cand, DecodingConfig(temperature=1.0)) == pytest.approx(1 - 0.3)
    assert sampled_agreement(ref, ref, DecodingConfig(temperature=0.7, top_p=0.9)) == pytest.approx(1.0)
    # top_p 0.6 leaves the reference {0, 1} and the candidate {2, 1}: they share token 1 only
    assert sampled_agreement(ref, cand, DecodingConfig(temperature=1.0, top_p=0.6)) == pytest.approx(0.375)


def test_sampled_agreement_tends_to_top1_agreement_as_the_temperature_falls() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 16, 40)) * 3
    cand = ref + rng.normal(size=ref.shape)
    top1 = float((ref.argmax(-1) == cand.argmax(-1)).mean())
    cold = sampled_agreement(ref, cand, DecodingConfig(temperature=1e-4))
    warm = sampled_agreement(ref, cand, DecodingConfig(temperature=1.0))
    assert cold == pytest.approx(top1, abs=1e-3) and warm > top1  # near-ties barely move what is sampled


def test_the_distribution_measured_is_the_one_the_engines_sampler_draws_from() -> None:
    logits = np.random.default_rng(1).normal(size=30) * 2
    decoding = DecodingConfig(temperature=0.7, top_p=0.8, top_k=8)
    sampler = RowSampler(Sampling(decoding.temperature, decoding.top_p, decoding.top_k, seed=3))
    freq = np.bincount([sampler.choose(logits) for _ in range(20000)], minlength=30) / 20000
    np.testing.assert_allclose(freq, sampling_distributions(logits, decoding), atol=0.015)


def test_a_top_k_at_or_above_the_vocabulary_is_no_limit_as_in_the_sampler() -> None:
    logits = np.random.default_rng(4).normal(size=(2, 3, 12)) * 2
    for top_p in (1.0, 0.8):
        unlimited = sampling_distributions(logits, DecodingConfig(temperature=0.7, top_p=top_p))
        for top_k in (12, 13, 100):
            got = sampling_distributions(logits, DecodingConfig(temperature=0.7, top_p=top_p, top_k=top_k))
            np.testing.assert_allclose(got, unlimited)
    ref, cand = logits, logits + 0.5 * np.random.default_rng(5).normal(size=logits.shape)
    assert sampled_agreement(ref, cand, DecodingConfig(temperature=0.7, top_k=50)) == pytest.approx(
        sampled_agreement(ref, cand, DecodingConfig(temperature=0.7)))


def test_fidelity_measures_sampled_agreement_only_under_a_sampling_decoding() -> None:
    rng = np.random.default_rng(2)
    ref, ids = rng.normal(size=(2, 8, 20)), rng.integers(0, 20, (2, 8))
    assert fidelity(ref, ref, ids).sampled_agreement is None
    assert fidelity(ref, ref, ids, DecodingConfig()).sampled_agreement is None
    assert fidelity(ref, ref, ids, DecodingConfig(temperature=0.5)).sampled_agreement == pytest.approx(1.0)
