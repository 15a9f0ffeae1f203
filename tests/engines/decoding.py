"""Prompts, built engines and greedy decoding shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan


def prompt(i: int, batch: int, length: int, seed: int = 100) -> np.ndarray:
    """The `i`-th random prompt (batch, length) of ids below 500 (every tiny model's vocabulary has them)."""
    return np.random.default_rng(seed + i).integers(1, 500, size=(batch, length), dtype=np.int64)


def greedy_tokens(engine: Engine, ids: np.ndarray, new: int) -> np.ndarray:
    """The engine's greedy tokens (batch, new), checking the contract: one int64 token per row per step."""
    steps = list(engine.generate(ids, new))
    assert len(steps) == new and all(s.shape == (ids.shape[0],) and s.dtype == np.int64 for s in steps)
    return np.stack(steps, axis=1)


def built_engine(name: str, model: Path, cache: Path, runtime: RuntimeOptions, **knobs: object) -> Engine:
    """Engine `name` loaded on the built-in model's artifact for a CPU candidate with `knobs`."""
    candidate = CandidateConfig(engine=name, **knobs)  # type: ignore[arg-type]
    built = run_pipeline(model, "builtin", plan(candidate, "cpu"), cache)
    return engine_class(name).load(built.artifact, candidate, runtime)
