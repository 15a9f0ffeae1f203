"""Continuous batching on the torch_compiled engine: rows join and leave a batch held in one slot's static cache
between decode steps, each step one call of the same compiled decode graph `generate` uses.

The layout is `autoopt.engines.stream.PaddedStream`'s, in a preallocated cache. Every live row's context ends at
the shared write position `width`, the next column a step writes. Row r's context is columns [starts[r], width);
its other columns are masked by the decoder's `starts` buffer, which also offsets the row's rotary positions, so
that each row is positioned from its own first token. A free row's start is the capacity: it attends only to the
column being written (never to nothing, which would give NaN), and its token is ignored.

- join: the prompt (n tokens) is prefilled alone in a one-row cache (the engine's one-row slot, or one of the
  stream's own), at columns [0, n), and its keys and values are copied into a free row at [width - n, width).
  Where n > width, every row first moves right by n - width (one copy of the cache).
- step: the slot's decode graph for all its rows at column `width` (free rows too: a graph's batch is fixed).
- leave: the row is freed, and the leading columns no live row uses are cut by moving every row left (one
  copy), so `width` is always the longest live row's context and a row fits wherever it would fit alone.

Keys are cached already rotated for their position counted from the row's first token, so a copy or a move keeps
them valid wherever they land. The copies write in place into the slot's buffers, whose addresses a captured
CUDA graph holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from autoopt.engines.sampling import RowSampler, Sampling, row_samplers
from autoopt.engines.stream import DecodeStream

if TYPE_CHECKING:
    from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, _Slot


class TorchCompiledStream(DecodeStream):
    """The layout in the module doc over `slot`'s cache; prompts are prefilled in `joiner`'s (a one-row slot)."""

    def __init__(self, engine: TorchCompiledEngine, slot: _Slot, joiner: _Slot) -> None:
        self._engine, self._slot, self._joiner = engine, slot, joiner
        self._capacity = engine._capacity
        rows = slot.decoder.starts.shape[0]
        self._keys: list[int | None] = [None] * rows
        self._samplers: list[RowSampler | None] = [None] * rows  # per slot row, None = greedy (or empty)
        self._starts = np.full(rows, self._capacity, dtype=np.int64)
        self._width = 0
        with torch.inference_mode():  # an inference tensor, as the graphs were compiled for (else they recompile)
            self._tokens = torch.zeros((rows, 1), dtype=torch.long, device=engine._device)

    @property
    def rows(self) -> int:
        return sum(key is not None for key in self._keys)

    @torch.inference_mode()
    def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
        [sampler] = row_samplers(self._engine.name, self._engine.samples, [sampling], 1)
        if key in self._keys:
            raise ValueError(f"row {key} is already in the stream")
        if None not in self._keys:
            raise ValueError(f"the stream's {len(self._keys)} rows are all taken")
        ids = torch.from_numpy(np.ascontiguousarray(np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)))
        n = ids.shape[1]
        if n > self._capacity:
            raise ValueError(f"prompt {n} tokens does not fit this engine's static cache of {self._capacity}: load it "
                             "with a larger max_length")
        joiner = self._joiner.decoder
        joiner.starts.zero_()
        token = self._engine._prefill(self._joiner, ids, [sampler])[0]
        if n > self._width:
            self._move(n - self._width)
        row = self._keys.index(None)
        for big, small in zip(self._slot.decoder.caches(), joiner.caches(), strict=True):
            big[row, :, self._width - n : self._width] = small[0, :, :n]
        self._keys[row], self._starts[row], self._samplers[row] = key, self._width - n, sampler
        self._tokens[row, 0] = token
        return int(token)

    @torch.inference_mode()
    def step(self) -> dict[int, int]:
        if not self.rows:
            return {}
        if self._width >= self._capacity:
            raise ValueError(f"the stream's longest row fills this engine's static cache of {self._capacity} "
                             "positions: no room for another token (load it with a larger max_length)")
        e = self._engine
        self._slot.decoder.starts.copy_(torch.from_numpy(self._starts))  # `generate` on this slot resets them
        token = e._call(self._slot.step, self._tokens, e._positions[self._width], e._positions[0], self._samplers)
        self._width += 1
        self._tokens = token[:, None]
        out = token.cpu().tolist()
        return {key: out[row] for row, key in enumerate(self._keys) if key is not None}

    @torch.inference_mode()
    def leave(self, key: int) -> None:
        row = self._keys.index(key)
        self._keys[row], self._starts[row], self._samplers[row] = None, self._capacity, None
        live = [r for r, k in enumerate(self._keys) if k is not None]
        if not live:
            self._width = 0
            return
        unused = int(self._starts[live].min())
        if unused:
            self._move(-unused)

    def _move(self, by: int) -> None:
        """Every row's columns `by` to the right (left where negative); `width` and the live rows' starts follow."""
        old, new = slice(max(0, -by), self._width), slice(max(0, by), self._width + by)
        for cache in self._slot.decoder.caches():
            cache[:, :, new] = cache[:, :, old].clone()
        live = np.array([k is not None for k in self._keys])
        self._starts[live] += by
        self._width += by
