"""Prompts and greedy decoding shared by the engine tests."""

from __future__ import annotations

import numpy as np

from autoopt.engines.base import Engine


def prompt(i: int, batch: int, length: int, seed: int = 100) -> np.ndarray:
    """The `i`-th random prompt (batch, length) of ids below 500 (every tiny model's vocabulary has them)."""
    return np.random.default_rng(seed + i).integers(1, 500, size=(batch, length), dtype=np.int64)


def greedy_tokens(engine: Engine, ids: np.ndarray, new: int) -> np.ndarray:
    """The engine's greedy tokens (batch, new), checking the contract: one int64 token per row per step."""
    steps = list(engine.generate(ids, new))
    assert len(steps) == new and all(s.shape == (ids.shape[0],) and s.dtype == np.int64 for s in steps)
    return np.stack(steps, axis=1)
