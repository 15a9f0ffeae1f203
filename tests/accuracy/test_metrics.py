from __future__ import annotations

import numpy as np
import pytest

from autoopt.accuracy.metrics import fidelity, log_softmax, perplexity


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
