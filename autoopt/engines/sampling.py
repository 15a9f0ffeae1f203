"""Token choice for rows that sample instead of decoding greedily.

A row samples only where its caller gives it a non-greedy `Sampling`: a request to `serve` that sets a temperature,
or a workload that declares one (`workload.decoding`). The engine computes its greedy tokens as always, and `pick`
replaces those of the sampling rows with draws from their logits on the host (copied for those rows only, except on
ort_genai, whose Generator hands over and takes back the whole batch's). A batch with no sampling row runs the
greedy path unchanged; in a batch with one, the greedy rows keep their tokens but every step waits for the draws.
Each row draws from its own random stream, seeded by its request, so its draws do not depend on the other rows of
its batch (its logits can, in the last bits, where padding changes the arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoopt.config.schema import MAX_TEMPERATURE, DecodingConfig, decoding_problem, greedy_decoding

__all__ = ["MAX_TEMPERATURE", "RowSampler", "Sampling", "drawing", "pick", "row_samplers", "workload_sampling"]


@dataclass(frozen=True)
class Sampling:
    """One row's settings: `temperature` 0 (greedy) .. 2; `top_p` in (0, 1], the nucleus; `top_k` >= 0, the k
    likeliest tokens (0 = no limit); `seed` makes the draws repeatable (None = fresh entropy). `draws`, where the
    caller reads only a row's first tokens (a short row riding along in a batch run to its longest): the tokens
    drawn, after which the row takes the argmax and costs no draw."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    draws: int | None = None

    def __post_init__(self) -> None:
        if problem := decoding_problem(self.temperature, self.top_p, self.top_k):
            raise ValueError(problem)

    @property
    def greedy(self) -> bool:
        return greedy_decoding(self.temperature, self.top_k)


class RowSampler:
    """Draws one row's tokens from its logits, with its own random stream."""

    def __init__(self, sampling: Sampling) -> None:
        if sampling.greedy:
            raise ValueError("a greedy row needs no sampler: the engine's argmax is its token")
        self.sampling = sampling
        seed = None if sampling.seed is None else sampling.seed % 2**64  # numpy takes non-negative seeds only
        self._rng = np.random.default_rng(seed)
        # Reused at every draw: a fresh array of a 152k vocabulary's float64s costs more in page faults than its exp.
        self._work = np.empty(0)
        self._left = sampling.draws

    @property
    def drawing(self) -> bool:
        """Whether its row's next token is drawn (else the argmax stands)."""
        return self._left is None or self._left > 0

    def choose(self, logits: np.ndarray) -> int:
        """A token drawn from `logits` (vocab,): scaled by 1/temperature, cut to the top k, then to the nucleus
        of mass top_p (the fewest likeliest tokens whose probabilities reach it). A draw must stay well below a
        decode step: over a 152k vocabulary a full sort or cumulative sum takes milliseconds, so the likeliest
        tokens are found by partitioning float32 logits (their order is the probabilities'), and the draw sums
        blocks before it sums within one."""
        s = self.sampling
        if self._left is not None:
            self._left -= 1
        scores = np.asarray(logits, dtype=np.float32)
        ids = np.argpartition(-scores, s.top_k - 1)[: s.top_k] if 0 < s.top_k < scores.size else None
        if ids is not None:
            scores = scores[ids]
        top = float(scores.max())  # NaN where any is
        if not np.isfinite(top):
            if np.isnan(top) or top < 0:
                raise ValueError("a sampling row's logits hold NaN or are all -inf: there is no distribution to draw "
                                 "from")
            scores = np.where(np.isposinf(scores), 0.0, -np.inf).astype(np.float32)  # all the mass on the +inf
        if self._work.size < scores.size:
            self._work = np.empty(scores.size)
        weights = self._work[: scores.size]  # exp((scores - max) / temperature), unnormalized
        np.subtract(scores, scores.max(), out=weights)
        np.divide(weights, s.temperature, out=weights)
        np.exp(weights, out=weights)
        if s.top_p < 1.0:
            kept = _nucleus(scores, weights, s.top_p)
            weights, ids = weights[kept], kept if ids is None else ids[kept]
        index = _draw(weights, self._rng.random())
        return index if ids is None else int(ids[index])


def _nucleus(scores: np.ndarray, weights: np.ndarray, top_p: float, first: int = 64) -> np.ndarray:
    """The indices of the fewest likeliest tokens whose share of `weights` (exp of `scores`, unnormalized) reaches
    `top_p`, likeliest first. It sorts the `first` likeliest, then 16 times as many while they fall short. Equal
    scores at the cut are kept in the sort's (deterministic) order."""
    need = top_p * weights.sum()
    m = first
    while True:
        if m < scores.size:
            order = np.argpartition(-scores, m - 1)[:m]
            order = order[np.argsort(-scores[order])]
        else:
            order = np.argsort(-scores)
        cumulative = np.cumsum(weights[order])
        if cumulative[-1] >= need or m >= scores.size:
            return order[: min(int(np.searchsorted(cumulative, need)), order.size - 1) + 1]
        m *= 16


def _draw(weights: np.ndarray, u: float, block: int = 1024) -> int:
    """The index where `u` (in [0, 1)) falls in the cumulative `weights`, never one of weight 0: the block it falls
    in from the blocks' sums, then the index within that block."""
    if weights.size <= 4 * block:
        cumulative = np.cumsum(weights)
        index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    else:
        sums = np.cumsum(np.add.reduceat(weights, np.arange(0, weights.size, block)))
        target = u * sums[-1]
        b = min(int(np.searchsorted(sums, target, side="right")), sums.size - 1)
        within = np.cumsum(weights[b * block : (b + 1) * block])
        index = b * block + int(np.searchsorted(within, target - (sums[b - 1] if b else 0.0), side="right"))
    index = min(index, weights.size - 1)
    if weights[index] == 0:
        # `u * total` fell a rounding error past a sum (the blocks and the cumulative sums add in different orders),
        # onto a token of weight 0: take the nearest one before it that has weight, else after it
        before, after = np.flatnonzero(weights[:index]), np.flatnonzero(weights[index:])
        index = int(before[-1]) if before.size else index + int(after[0])
    return index


def workload_sampling(decoding: DecodingConfig, rows: int, first_seed: int) -> tuple[Sampling, ...] | None:
    """The rows of one workload request as `decoding` says (their seeds `decoding.seed + first_seed` onward), or None
    where it decodes greedily."""
    if decoding.greedy:
        return None
    return tuple(Sampling(decoding.temperature, decoding.top_p, decoding.top_k, decoding.seed + first_seed + r)
                 for r in range(rows))


def row_samplers(engine_name: str, samples: bool, sampling: Sequence[Sampling | None] | None,
                 rows: int) -> list[RowSampler | None]:
    """One sampler per row (None where the row decodes greedily), for an engine whose `samples` says whether it
    can draw at all."""
    if sampling is None:
        return [None] * rows
    if len(sampling) != rows:
        raise ValueError(f"sampling has {len(sampling)} entries for {rows} rows")
    samplers = [None if s is None or s.greedy else RowSampler(s) for s in sampling]
    if not samples and any(samplers):
        raise ValueError(f"engine {engine_name} decodes greedily only; give its rows temperature 0")
    return samplers


def drawing(samplers: Sequence[RowSampler | None]) -> bool:
    """Whether any row draws its next token."""
    return any(s is not None and s.drawing for s in samplers)


def pick(greedy: np.ndarray, samplers: Sequence[RowSampler | None],
         logits_of: Callable[[list[int]], np.ndarray]) -> np.ndarray:
    """`greedy` (rows,) with the token of each row still drawing (`RowSampler.drawing`) drawn instead.
    `logits_of(rows)` gives those rows' logits (len(rows), vocab) on the host; it is called only where some row
    draws."""
    rows = [r for r, s in enumerate(samplers) if s is not None and s.drawing]
    if not rows:
        return greedy
    logits = logits_of(rows)
    tokens = np.array(greedy, dtype=np.int64, copy=True)
    for i, row in enumerate(rows):
        tokens[row] = samplers[row].choose(logits[i])  # type: ignore[union-attr]
    return tokens
