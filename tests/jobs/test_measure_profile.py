"""The measuring job's profile: the unprofiled request is timed as many times as the profiled one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoopt.accuracy.decode import DECODE_NEW_TOKENS, decode_prompts
from autoopt.bench.profile import RequestWall
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import BenchConfig, CandidateConfig, TargetConfig, WorkloadConfig
from autoopt.engines.base import Engine
from autoopt.jobs import measure as measure_module
from autoopt.jobs.measure import MeasureJob, measure
from autoopt.result import Built, Profile

VOCAB = 16


class ZeroEngine(Engine):
    """Generates token 0 and uniform logits, instantly."""

    name = "zero"

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> ZeroEngine:
        return cls()

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        for _ in range(max_new_tokens):
            yield np.zeros(input_ids.shape[0], dtype=np.int64)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return np.zeros((*input_ids.shape, VOCAB), dtype=np.float32)


def _reference(path: Path) -> Path:
    stream = np.arange(512, dtype=np.int64) % VOCAB
    ids = stream[:32].reshape(2, 16)
    prompts = decode_prompts(stream)
    np.savez(path, stream=stream, ids=ids, logits=np.zeros((2, 16, VOCAB), np.float32), decode_prompts=prompts,
             decode_tokens=np.zeros((len(prompts), DECODE_NEW_TOKENS), np.int64))
    return path


def test_the_unprofiled_wall_time_is_the_least_of_profile_repeats_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walls: list[RequestWall] = []

    def profile_request(engine: str, *args: Any, repeats: int, **kwargs: Any) -> Profile:
        walls.append(args[-1])
        return Profile(engine, "fake", 1, 8, 4, repeats)

    monkeypatch.setattr(measure_module, "engine_class", lambda name: ZeroEngine)
    monkeypatch.setattr(measure_module, "profile_request", profile_request)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    bench = BenchConfig(warmup_runs=1, min_runs=1, min_seconds=0.0, profile=True, profile_repeats=2)
    job = MeasureJob(
        candidate=CandidateConfig(engine="torch"),
        target=TargetConfig(name="cpu", memory_gb=1.0, price_per_hour=1.0, price_source="test"),
        workload=WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[4]),
        bench=bench,
        runtime=RuntimeOptions(device="cpu", threads=1, max_length=96, max_batch=4),
        model={},
        reference=str(_reference(tmp_path / "reference.npz")),
        built=Built(artifact, "key", "sha", [], cached=True, seconds=0.0, build_seconds=0.0),
    )

    result = measure(job)

    assert result.profile is not None and result.profile.repeats == 2
    assert [wall.repeats for wall in walls] == [2]
