"""Fidelity of a candidate's next-token distributions to the reference's, teacher-forced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Fidelity:
    kl_mean: float  # mean over positions of KL(reference || candidate), nats
    top1_agreement: float  # fraction of positions with the same argmax
    perplexity: float  # candidate, next-token on the same ids
    reference_perplexity: float
    positions: int


def perplexity(logprobs: np.ndarray, ids: np.ndarray) -> float:
    """exp(mean NLL) of ids[:, 1:] under the distributions at positions [:, :-1]."""
    targets = ids[:, 1:]
    picked = np.take_along_axis(logprobs[:, :-1, :], targets[..., None], axis=-1)[..., 0]
    return float(np.exp(-picked.mean()))


def fidelity(reference_logits: np.ndarray, candidate_logits: np.ndarray, ids: np.ndarray) -> Fidelity:
    """Compare (batch, seq, vocab) candidate logits with the reference's on the token `ids`.

    Both sides go through the same float64 log-softmax, so identical logits give exactly KL 0.
    """
    if reference_logits.shape != candidate_logits.shape:
        raise ValueError(f"shape mismatch: reference {reference_logits.shape} vs candidate {candidate_logits.shape}")
    ref = log_softmax(reference_logits)
    cand = log_softmax(candidate_logits)
    kl = (np.exp(ref) * (ref - cand)).sum(axis=-1)
    agree = ref.argmax(axis=-1) == cand.argmax(axis=-1)
    return Fidelity(
        kl_mean=float(max(kl.mean(), 0.0)),
        top1_agreement=float(agree.mean()),
        perplexity=perplexity(cand, ids),
        reference_perplexity=perplexity(ref, ids),
        positions=int(agree.size),
    )
