"""A small hand-made space and a synthetic ground truth over it (hand-made MeasureResults)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from autoopt.config.schema import CandidateConfig, SearchConfig, SpaceConfig, TargetConfig
from autoopt.jobs.prepare import Prepared
from autoopt.result import MeasureResult
from autoopt.searchbench.grid import Grid, enumerate_grid
from autoopt.searchbench.replay import Bench
from autoopt.study.trial import candidate_key
from tests.study.results import result

CORES = 2
# candidate_key reads only the target's cores and the workload's batch size
KEY_BASIS = cast(Prepared, SimpleNamespace(target=SimpleNamespace(cores=CORES), workload=SimpleNamespace(batch_size=1)))


def key(c: CandidateConfig) -> str:
    return candidate_key(c, KEY_BASIS)


def problem(c: CandidateConfig) -> str | None:
    return "torch int8_dynamic is refused here (test)" if (c.engine, c.quant) == ("torch", "int8_dynamic") else None


def small_space(**over: Any) -> Any:
    values: dict[str, Any] = dict(name="small", engine=["torch", "ort_genai"], quant=["none", "int8_dynamic", "int4"],
                                  quant_block_size=[32, 128], threads=[0, CORES], kv_cache=["dynamic", "static"])
    values.update(over)
    return SpaceConfig(**values)


def target() -> TargetConfig:
    return TargetConfig(name="cpu", device="cpu", precisions=["fp32", "bf16", "int8", "int4"],
                        engines=["torch", "ort", "ort_genai"], memory_gb=8.0, cores=CORES, price_per_hour=0.1,
                        price_source="test")


def synthetic(c: CandidateConfig) -> MeasureResult | str:
    """Figures with a clear structure: genai faster than torch, int4 fastest but one block size misses the
    bar, static KV a little faster; the reference (torch fp32) is the slowest."""
    if c.engine == "ort_genai" and c.quant == "int4" and c.quant_block_size == 128 and c.kv_cache == "static":
        return "build failed (test)"
    ms = {"torch": 100.0, "ort_genai": 50.0}[c.engine] * {"none": 1.0, "int8_dynamic": 0.6, "int4": 0.4}[c.quant]
    ms *= 0.9 if c.kv_cache == "static" else 1.0
    top1 = {"none": 1.0, "int8_dynamic": 0.97, "int4": 0.96 if c.quant_block_size == 32 else 0.93}[c.quant]
    return result(ms, ms / 1000, top1, candidate=c)


@pytest.fixture
def grid() -> Grid:
    return enumerate_grid(small_space(), key, problem)


@pytest.fixture
def bench(grid: Grid) -> Bench:
    results = {p.key: synthetic(p.candidate) for p in grid.points}
    return Bench.of(grid.points, results, small_space(), SearchConfig(), target(), key, problem)
