"""Continuous batching on the torch_compiled engine: rows join and leave a batch held in one slot's static cache
between decode steps, each step one call of the same compiled decode graph `generate` uses.

The layout is `autoopt.engines.stream.PaddedStream`'s, in a preallocated cache. Every live row's context ends at
the shared write position `width`, the next column a step writes. Row r's context is columns [starts[r], width);
its other columns are masked by the decoder's `starts` buffer, which also offsets the row's rotary positions, so
that each row is positioned from its own first token. A free row's start is the capacity: it attends only to the
column being written (never to nothing, which would give NaN), and its token is ignored.

- join: the prompt (n tokens) is prefilled alone in a one-row cache (the engine's one-row slot, or an uncompiled
  one the engine keeps for its streams), at columns [0, n), and its keys and values are copied into a free row at
  [width - n, width). Where n > width, every row first moves right by n - width (one copy of the cache).
- begin, prefill: a prompt prefilled in parts runs each part at its own columns of the one-row cache, after the
  parts before it. Those stay in that cache while the same prompt's parts follow; when anything else takes the
  cache (another prompt's part, another stream, the engine's `generate`: `TorchCompiledEngine._claim`), they are
  copied out first, and copied back before the prompt's next part. The last part's keys and values join the batch
  as a whole prompt's do.
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

from autoopt.engines.sampling import RowSampler
from autoopt.engines.stream import JoiningStream

if TYPE_CHECKING:
    from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, _Slot


class TorchCompiledStream(JoiningStream):
    """The layout in the module doc over `slot`'s cache; prompts are prefilled in `joiner`'s (a one-row slot)."""

    def __init__(self, engine: TorchCompiledEngine, slot: _Slot, joiner: _Slot) -> None:
        super().__init__(engine.name, engine.samples)
        self._engine, self._slot, self._joiner = engine, slot, joiner
        self._capacity = engine._capacity
        rows = slot.decoder.starts.shape[0]
        self._keys: list[int | None] = [None] * rows
        self._samplers: list[RowSampler | None] = [None] * rows  # per slot row, None = greedy (or empty)
        self._starts = np.full(rows, self._capacity, dtype=np.int64)
        self._width = 0
        self._resident: list[torch.Tensor] | None = None  # views of the one-row cache: the prompt so far in it
        with torch.inference_mode():  # an inference tensor, as the graphs were compiled for (else they recompile)
            self._tokens = torch.zeros((rows, 1), dtype=torch.long, device=engine._device)

    @property
    def keys(self) -> list[int]:
        return [key for key in self._keys if key is not None]

    def _refusal(self, prompt_len: int) -> str | None:
        if self.rows + len(self._prefilling) >= len(self._keys):
            return f"the stream's {len(self._keys)} rows are all taken"
        if prompt_len > self._capacity:
            return (f"prompt {prompt_len} tokens does not fit this engine's static cache of {self._capacity}: load it "
                    "with a larger max_length")
        return None

    @torch.inference_mode()
    def _prefill(self, prompt_ids: np.ndarray, past: list[torch.Tensor] | None,
                 sampler: RowSampler | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._engine._claim(self._joiner, self)
        joiner = self._joiner.decoder
        caches = joiner.caches()
        done = 0 if past is None else past[0].shape[2]
        if past is None or past is not self._resident:  # the cache holds another prompt's parts, or none
            self._save_resident()
            if past is not None:  # this prompt's, copied out when another took the cache
                for cache, before in zip(caches, past, strict=True):
                    cache[:, :, :done] = before
        joiner.starts.zero_()
        token = self._engine._prefill(self._joiner, torch.from_numpy(prompt_ids), [sampler], start=done)[0]
        self._resident = [cache[:, :, : done + prompt_ids.shape[1]] for cache in caches]
        return token, self._resident

    def _save_resident(self) -> None:
        """The one-row cache is about to take something else: the parts of the prompt in it become copies, in place
        (the list is the one that prompt's bookkeeping, `JoiningStream`, holds as its cache so far), unless that
        prompt has left."""
        if self._resident is not None and any(p.kv is self._resident for p in self._prefilling.values()):
            self._resident[:] = [view.clone() for view in self._resident]
        self._resident = None

    @torch.inference_mode()
    def _add(self, key: int, own: int, kv: list[torch.Tensor], sampler: RowSampler | None, token: int) -> None:
        if own > self._width:
            self._move(own - self._width)
        row = self._keys.index(None)
        for big, small in zip(self._slot.decoder.caches(), kv, strict=True):
            big[row, :, self._width - own : self._width] = small[0]
        self._keys[row], self._starts[row], self._samplers[row] = key, self._width - own, sampler
        self._tokens[row, 0] = token
        self._resident = None  # its parts are in the batch now

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
    def _drop(self, key: int) -> None:
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
