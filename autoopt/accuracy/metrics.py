"""Fidelity of a candidate's next-token distributions to the reference's, teacher-forced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoopt.config.schema import DecodingConfig


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
    sampled_agreement: float | None = None  # under a sampling workload (`sampled_agreement`); None: greedy


def sampling_distributions(logits: np.ndarray, decoding: DecodingConfig) -> np.ndarray:
    """What a row samples from at each position of `logits` (..., vocab), as `autoopt.engines.sampling` draws:
    softmax(logits / temperature), cut to the top_k likeliest, renormalized, cut to the nucleus (the likeliest
    tokens until their mass reaches top_p), renormalized. Which of several equal logits at a cut is kept is the
    sort's choice, here and in the sampler alike."""
    probs = np.exp(log_softmax(logits.astype(np.float64) / decoding.temperature))
    top_k = decoding.top_k if 0 < decoding.top_k < logits.shape[-1] else 0  # the sampler's: k >= vocab is no limit
    if top_k == 0 and decoding.top_p >= 1.0:
        return probs
    if decoding.top_p >= 1.0:  # top_k alone: the k likeliest, unordered, are enough
        kept = np.argpartition(-logits, top_k - 1, axis=-1)[..., :top_k]
        out = np.zeros_like(probs)
        np.put_along_axis(out, kept, np.take_along_axis(probs, kept, axis=-1), axis=-1)
        return out / out.sum(axis=-1, keepdims=True)
    order = np.argsort(-logits.astype(np.float32), axis=-1)  # the probabilities' order, sorted as float32
    ranked = np.take_along_axis(probs, order, axis=-1)
    if top_k:
        ranked[..., top_k:] = 0.0
        ranked /= ranked.sum(axis=-1, keepdims=True)
    before = np.cumsum(ranked, axis=-1) - ranked  # the mass of the likelier tokens
    ranked = np.where(before < decoding.top_p, ranked, 0.0)
    ranked /= ranked.sum(axis=-1, keepdims=True)
    out = np.empty_like(probs)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def sampled_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray, decoding: DecodingConfig,
                      chunk: int = 16) -> float:
    """Mean over positions of the probability mass that what the reference and the candidate sample from under
    `decoding` have in common: sum(min(p, q)) = 1 - their total variation distance. It is the highest chance that
    some pairing of the two draws picks the same token (a maximal coupling); two samplers sharing a seed match less
    often. As the temperature falls it tends to top-1 agreement. `chunk` positions at a time, so that a large
    vocabulary's float64 copies stay small."""
    if decoding.greedy:
        raise ValueError("sampled agreement is for a sampling decoding; greedy decoding's is top-1 agreement")
    vocab = reference_logits.shape[-1]
    ref, cand = reference_logits.reshape(-1, vocab), candidate_logits.reshape(-1, vocab)
    total = 0.0
    for start in range(0, ref.shape[0], chunk):
        p = sampling_distributions(ref[start : start + chunk], decoding)
        q = sampling_distributions(cand[start : start + chunk], decoding)
        total += float(np.minimum(p, q).sum())
    return total / ref.shape[0]


def perplexity(logprobs: np.ndarray, ids: np.ndarray) -> float:
    """exp(mean NLL) of ids[:, 1:] under the distributions at positions [:, :-1]."""
    targets = ids[:, 1:]
    picked = np.take_along_axis(logprobs[:, :-1, :], targets[..., None], axis=-1)[..., 0]
    return float(np.exp(-picked.mean()))


def fidelity(reference_logits: np.ndarray, candidate_logits: np.ndarray, ids: np.ndarray,
             decoding: DecodingConfig | None = None) -> Fidelity:
    """Compare (batch, seq, vocab) candidate logits with the reference's on the token `ids`, and where `decoding`
    samples, what each samples from (`sampled_agreement`).

    Both sides go through the same float64 log-softmax, so identical logits give exactly KL 0.
    """
    if reference_logits.shape != candidate_logits.shape:
        raise ValueError(f"shape mismatch: reference {reference_logits.shape} vs candidate {candidate_logits.shape}")
    # before the float64 log-softmaxes of the whole windows exist: it holds a few positions' copies at a time
    sampled = (None if decoding is None or decoding.greedy
               else sampled_agreement(reference_logits, candidate_logits, decoding))
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
        sampled_agreement=sampled,
    )
