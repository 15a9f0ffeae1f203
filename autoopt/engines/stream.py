"""Continuous batching's engine side: rows that join and leave a running batch between decode steps.

A joining request is prefilled alone, whole (`join`) or in parts (`begin`, then `prefill` of so many tokens at a
time, each part attending to the cache of the parts before it, which is kept apart from the batch's): between
parts the running rows can take decode steps (chunked prefill), and the row joins the batch at its last part.
`JoiningStream` keeps that bookkeeping, once for every engine.

A `PaddedStream` keeps every row's KV cache in one batch of a shared length, each row's context at the right
end and padding (masked out) before it, as `left_aligned` lays out a batch of prompts. A joiner's cache is padded
on the left to the batch's length, or the batch's to its own when it is longer. A row that leaves is dropped, and
the columns no remaining row uses are cut, so the cache is never longer than its longest live row. Each `step`
decodes every row at once.
Where an engine's positions count every column, padding included (ort's graph has no position input),
`_repositioned` moves the cached keys whenever columns are added before or cut from a row's context, so the row
keeps the positions of a prompt left-padded to the batch's length (as `generate` with `prompt_lengths` lays it out).

Engines supply the model calls (`_prefill`, `_decode`) and the array operations on their cache tensors
(`KVOps`); the bookkeeping (which row is which request, the mask, the padding, its sampler) is here, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from autoopt.engines.sampling import RowSampler, Sampling, row_samplers

T = TypeVar("T")


@dataclass
class _Prefilling:
    """A prompt prefilled in parts: how much of it is in its own cache so far."""

    ids: np.ndarray  # (1, prompt_len)
    sampler: RowSampler | None
    done: int = 0
    kv: list[Any] | None = None


class DecodeStream(ABC):
    """A batch whose rows change between decode steps. Rows are keyed by the caller (a request id).

    Each row decodes greedily as its prompt would alone through the engine's `generate` (up to rounding where
    the engine's positions count the padding, as ort's do), or samples where it joined with a non-greedy
    `Sampling` (engines that `samples`). A prompt joins whole (`join`) or in parts (`begin`, `prefill`)."""

    @abstractmethod
    def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
        """Prefill `prompt_ids` (int64, (prompt_len,)) as a new row; return its first token."""

    @abstractmethod
    def begin(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> None:
        """Take `prompt_ids` as a row whose prompt `prefill` runs in parts; it joins the batch at its last part."""

    @abstractmethod
    def prefill(self, key: int, tokens: int) -> int | None:
        """Prefill up to `tokens` more of `key`'s prompt (`begin`): its first token once the whole prompt is in
        (the row then decodes with the others at each `step`), else None."""

    @abstractmethod
    def step(self) -> dict[int, int]:
        """One decode step for every row: key → its next token."""

    @abstractmethod
    def leave(self, key: int) -> None:
        """Drop a row (its request is complete or its client went away), or a prompt still being prefilled."""

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows now in the batch (not counting prompts still being prefilled)."""


class JoiningStream(DecodeStream):
    """The parts' bookkeeping of every engine's stream. Engines supply the model call on a part (`_prefill`), how a
    prefilled prompt's cache joins the batch (`_add`) and leaves it (`_drop`), and the decode `step`."""

    def __init__(self, engine_name: str, samples: bool) -> None:
        self._engine_name, self._samples = engine_name, samples
        self._prefilling: dict[int, _Prefilling] = {}

    @property
    @abstractmethod
    def keys(self) -> list[int]:
        """The rows now in the batch (not the prompts still being prefilled)."""

    @abstractmethod
    def _prefill(self, prompt_ids: np.ndarray, past: list[Any] | None,
                 sampler: RowSampler | None) -> tuple[Any, list[Any]]:
        """One prompt alone, (1, n), after `past` (the cache of its first tokens; None: it starts there) → the
        token after it (drawn by `sampler` where it has one; anything `int` takes: a part's token that is not the
        row's is never read, so a device value need not be copied to the host) and the cache tensors of the prompt
        so far."""

    @abstractmethod
    def _add(self, key: int, own: int, kv: list[Any], sampler: RowSampler | None, token: int) -> None:
        """A row whose prompt (`own` tokens) is all in `kv` joins the batch, `token` its newest."""

    @abstractmethod
    def _drop(self, key: int) -> None:
        """Row `key` leaves the batch."""

    def _refusal(self, prompt_len: int) -> str | None:
        """Why a prompt of `prompt_len` tokens cannot become a row now (no room, no cache for it); None: it can."""
        return None

    @property
    def rows(self) -> int:
        return len(self.keys)

    def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
        self.begin(key, prompt_ids, sampling)
        try:
            token = self.prefill(key, self._prefilling[key].ids.shape[1])
        except Exception:  # the stream stays as it was
            self._prefilling.pop(key, None)
            raise
        assert token is not None
        return token

    def begin(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> None:
        if key in self.keys or key in self._prefilling:
            raise ValueError(f"row {key} is already in the stream")
        [sampler] = row_samplers(self._engine_name, self._samples, [sampling], 1)
        ids = np.ascontiguousarray(np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1))
        if (why := self._refusal(ids.shape[1])) is not None:
            raise ValueError(why)
        self._prefilling[key] = _Prefilling(ids, sampler)

    def prefill(self, key: int, tokens: int) -> int | None:
        if tokens < 1:
            raise ValueError(f"prefill takes at least 1 token, got {tokens}")
        p = self._prefilling[key]
        end = min(p.done + tokens, p.ids.shape[1])
        last = end == p.ids.shape[1]  # only the last part's token is the row's: a sampler draws it alone
        token, p.kv = self._prefill(np.ascontiguousarray(p.ids[:, p.done : end]), p.kv, p.sampler if last else None)
        p.done = end
        if not last:
            return None
        token = int(token)
        self._add(key, p.ids.shape[1], p.kv, p.sampler, token)
        del self._prefilling[key]
        return token

    def leave(self, key: int) -> None:
        if self._prefilling.pop(key, None) is None:
            self._drop(key)


class KVOps(ABC, Generic[T]):
    """The four operations a stream needs on one cache tensor (batch, heads, positions, head_dim)."""

    @abstractmethod
    def pad_left(self, x: T, n: int) -> T:
        """`n` zero positions before the existing ones."""

    @abstractmethod
    def cat(self, xs: list[T]) -> T:
        """Concatenated along the batch."""

    @abstractmethod
    def take(self, x: T, rows: list[int]) -> T:
        """Those rows, in that order."""

    def cut_left(self, x: T, n: int) -> T:
        """Without its first `n` positions."""
        return x[:, :, n:]


class NumpyKV(KVOps[np.ndarray]):
    def pad_left(self, x: np.ndarray, n: int) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, 0), (n, 0), (0, 0)))

    def cat(self, xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs)

    def take(self, x: np.ndarray, rows: list[int]) -> np.ndarray:
        return x[rows]

    def cut_left(self, x: np.ndarray, n: int) -> np.ndarray:
        return np.ascontiguousarray(x[:, :, n:])  # runtimes take contiguous arrays only


class PaddedStream(JoiningStream):
    """The shared-length layout described in the module doc. Subclasses run the model."""

    def __init__(self, ops: KVOps[Any], engine_name: str, samples: bool) -> None:
        super().__init__(engine_name, samples)
        self._ops = ops
        self._keys: list[int] = []
        self._samplers: list[RowSampler | None] = []  # per row, None = greedy
        self._kv: list[Any] = []  # one tensor per cache input, (rows, heads, length, head_dim)
        self._mask = np.zeros((0, 0), dtype=np.int64)  # (rows, length): 1 = context, 0 = padding
        self._last = np.zeros(0, dtype=np.int64)  # each row's newest token, not yet in the cache

    @abstractmethod
    def _decode(self, tokens: np.ndarray, kv: list[Any], mask: np.ndarray,
                samplers: list[RowSampler | None]) -> tuple[np.ndarray, list[Any]]:
        """`tokens` (rows, 1) after `kv`; `mask` (rows, length + 1) covers both → next tokens (rows,; a row with a
        sampler draws its token, `autoopt.engines.sampling.pick`), new cache."""

    def _repositioned(self, kv: list[Any], n: int) -> list[Any]:
        """`kv` after `n` columns were added before every row's context (n > 0) or its first -n cut (n < 0). Where
        the engine's positions count the context only (the default), nothing moves."""
        return kv

    def _moved(self, kv: list[Any], n: int) -> list[Any]:
        """`kv` with `n` padding columns added on the left (n > 0) or its first -n columns cut (n < 0)."""
        if n == 0:
            return kv
        kv = [self._ops.pad_left(x, n) if n > 0 else self._ops.cut_left(x, -n) for x in kv]
        return self._repositioned(kv, n)

    @property
    def keys(self) -> list[int]:
        return list(self._keys)

    def _add(self, key: int, own: int, kv: list[Any], sampler: RowSampler | None, token: int) -> None:
        length = self._mask.shape[1]
        if not self._keys:
            self._kv, self._mask = kv, np.ones((1, own), dtype=np.int64)
        else:
            if own > length:
                self._kv = self._moved(self._kv, own - length)
                self._mask = np.pad(self._mask, ((0, 0), (own - length, 0)))
                length = own
            kv = self._moved(kv, length - own)
            self._kv = [self._ops.cat([x, y]) for x, y in zip(self._kv, kv, strict=True)]
            row = (np.arange(length) >= length - own).astype(np.int64)[None, :]
            self._mask = np.concatenate([self._mask, row])
        self._keys.append(key)
        self._samplers.append(sampler)
        self._last = np.append(self._last, token)

    def step(self) -> dict[int, int]:
        if not self._keys:
            return {}
        mask = np.pad(self._mask, ((0, 0), (0, 1)), constant_values=1)
        tokens, self._kv = self._decode(self._last[:, None], self._kv, mask, self._samplers)
        self._mask, self._last = mask, np.asarray(tokens, dtype=np.int64).reshape(-1)
        return dict(zip(self._keys, self._last.tolist(), strict=True))

    def _drop(self, key: int) -> None:
        index = self._keys.index(key)
        keep = [r for r in range(len(self._keys)) if r != index]
        del self._keys[index]
        del self._samplers[index]
        self._last = self._last[keep]
        if not keep:
            self._kv, self._mask = [], np.zeros((0, 0), dtype=np.int64)
            return
        self._mask = self._mask[keep]
        unused = int(self._mask.any(axis=0).argmax())  # leading columns no remaining row attends to
        self._mask = self._mask[:, unused:]
        self._kv = self._moved([self._ops.take(x, keep) for x in self._kv], -unused)
