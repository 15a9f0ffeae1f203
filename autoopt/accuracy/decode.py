"""Decode-path fidelity: the candidate's own greedy `generate()` against the fp32 reference's.

Teacher-forced logits (`metrics.fidelity`) run the prefill path only, so a broken KV cache, buffer
sharing or position bookkeeping would still agree perfectly there. Here the candidate decodes from
held-out prompts with its own cache, and its tokens are compared with the reference's greedy
continuation of the same prompts.

After the first divergence the candidate continues on its own tokens, so later positions compare
different contexts: `prefix_agreement` is the strict figure, `token_agreement` the lenient one. Neither
tells a near-tie that flipped (a quantized model may legitimately continue otherwise) from a decode path
that computes something else: `self_agreement` does. It feeds the candidate's own continuation back through
its teacher-forced `logits()` and counts the positions where that argmax is the token `generate()` chose, on
the same context. A correct KV cache gives 1.0 up to near-ties between the two kernels; a broken one, about
what chance gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from autoopt.engines.base import Engine

# Sizes of the decode check, the same for the reference and every candidate. Eight prompts of 64
# tokens, 32 greedy tokens each: two batched calls, a fraction of a second on the built-in model. They are
# the most varied of DECODE_POOL held-out prompts (see `most_varied`).
DECODE_PROMPTS = 8
DECODE_POOL = 32
DECODE_PROMPT_LEN = 64
DECODE_NEW_TOKENS = 32
DECODE_ROWS_PER_CALL = 4  # rows per generate() call; engines are loaded with max_batch >= 4
DECODE_MAX_LENGTH = DECODE_PROMPT_LEN + DECODE_NEW_TOKENS  # what RuntimeOptions.max_length must allow


@dataclass(frozen=True)
class DecodeFidelity:
    """Agreement of a candidate's greedy tokens with the reference's on the same prompts."""

    prefix_agreement: float  # mean over prompts of (tokens before the first divergence) / new tokens
    token_agreement: float  # fraction of all generated positions with the reference's token
    prompts: int
    new_tokens: int  # per prompt
    first_divergence: tuple[int, ...]  # per prompt: index of the first differing token, new_tokens if none
    self_agreement: float | None = None  # generate()'s tokens = argmax of its own logits() on the same context

    @property
    def tokens(self) -> int:
        return self.prompts * self.new_tokens


def decode_prompts(stream: np.ndarray, count: int = DECODE_PROMPTS, length: int = DECODE_PROMPT_LEN) -> np.ndarray:
    """`count` prompts of `length` tokens, centred in equal slices of the held-out `stream`.

    Centred slices keep them apart from the teacher-forced windows, which start at slice boundaries.
    """
    if len(stream) < count * length:
        raise ValueError(
            f"evaluation text has {len(stream)} tokens; {count} decode prompts of {length} need {count * length}"
        )
    stride = len(stream) // count
    starts = [i * stride + (stride - length) // 2 for i in range(count)]
    return np.stack([stream[s : s + length] for s in starts]).astype(np.int64)


def most_varied(continuations: np.ndarray, count: int) -> np.ndarray:
    """Indices (ascending) of `count` rows of `continuations` with the most distinct tokens, no two alike.

    A small model's greedy continuation often falls into a loop or repeats one token; checked against such a
    row, a decode path that emits that token gets most positions right whatever it computes. Rows with
    varied tokens make the check discriminate."""
    order = sorted(range(len(continuations)), key=lambda i: (-len(set(continuations[i].tolist())), i))
    kept: list[int] = []
    for i in order:
        if not any(np.array_equal(continuations[i], continuations[j]) for j in kept):
            kept.append(i)
        if len(kept) == count:
            break
    return np.asarray(sorted(kept if len(kept) == count else order[:count]), dtype=np.int64)


def greedy_continuations(engine: Engine, prompts: np.ndarray, new_tokens: int = DECODE_NEW_TOKENS) -> np.ndarray:
    """int64 (prompts, new_tokens): the engine's greedy tokens, `DECODE_ROWS_PER_CALL` prompts per call."""
    chunks = []
    for i in range(0, len(prompts), DECODE_ROWS_PER_CALL):
        rows = np.ascontiguousarray(prompts[i : i + DECODE_ROWS_PER_CALL], dtype=np.int64)
        steps = list(engine.generate(rows, new_tokens))
        if len(steps) != new_tokens:
            raise RuntimeError(
                f"engine {engine.name} yielded {len(steps)} tokens for max_new_tokens={new_tokens}; "
                f"the Engine contract is exactly max_new_tokens steps"
            )
        chunks.append(np.stack([np.asarray(s, dtype=np.int64).reshape(len(rows)) for s in steps], axis=1))
    return np.concatenate(chunks)


def compare_continuations(reference: np.ndarray, candidate: np.ndarray) -> DecodeFidelity:
    """Agreement of two (prompts, new_tokens) token arrays; identical arrays give exactly 1.0 and 1.0."""
    if reference.shape != candidate.shape or reference.ndim != 2 or reference.size == 0:
        raise ValueError(
            f"shape mismatch: reference continuations {reference.shape} vs candidate {candidate.shape}; "
            f"both must be the same non-empty (prompts, new_tokens)"
        )
    prompts, new_tokens = reference.shape
    same = reference == candidate
    first = [int(np.argmin(row)) if not row.all() else new_tokens for row in same]
    return DecodeFidelity(
        prefix_agreement=float(np.mean(first) / new_tokens),
        token_agreement=float(same.mean()),
        prompts=prompts,
        new_tokens=new_tokens,
        first_divergence=tuple(first),
    )


def decode_fidelity(engine: Engine, prompts: np.ndarray, reference_tokens: np.ndarray) -> DecodeFidelity:
    """Run the candidate's own `generate()` on `prompts` and compare with the reference's tokens.

    `prompts` and `reference_tokens` are the reference file's `decode_prompts` and `decode_tokens`.
    The engine must have been loaded with max_length >= prompt length + new tokens and max_batch >=
    `DECODE_ROWS_PER_CALL`.
    """
    candidate = greedy_continuations(engine, prompts, reference_tokens.shape[1])
    return replace(compare_continuations(reference_tokens, candidate),
                   self_agreement=self_agreement(engine, prompts, candidate))


def self_agreement(engine: Engine, prompts: np.ndarray, continuations: np.ndarray) -> float:
    """Fraction of `continuations` (the engine's own greedy tokens after `prompts`) that its teacher-forced
    `logits()` also picks: position k is compared on the prompt and the first k tokens of its own continuation."""
    ids = np.concatenate([prompts, continuations[:, :-1]], axis=1).astype(np.int64)
    start = prompts.shape[1] - 1  # the logits at the prompt's last position predict the first new token
    picked = [np.asarray(engine.logits(ids[i : i + DECODE_ROWS_PER_CALL]))[:, start:].argmax(axis=-1)
              for i in range(0, len(ids), DECODE_ROWS_PER_CALL)]
    return float((np.concatenate(picked) == continuations).mean())
