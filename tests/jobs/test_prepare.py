"""What a run prepares once: a workload its evaluation text cannot serve fails there, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.accuracy.decode import DECODE_MAX_LENGTH
from autoopt.accuracy.reference import Reference
from autoopt.config.errors import ConfigError
from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.prepare import Prepared, prepare
from autoopt.models.source import ResolvedModel
from autoopt.result import Built

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"prompt_lengths": [8, 10**7]}, "workload.prompt_lengths"), ({"eval_windows": 10**6}, "workload.eval_windows")],
)
def test_a_workload_longer_than_its_evaluation_text_fails_before_any_trial(
    tiny_model: Path, tmp_path: Path, settings: dict, key: str
) -> None:
    base = {"name": "w", "output_lengths": [3], "eval_windows": 2, "eval_window_len": 32}
    workload = WorkloadConfig(**{**base, **settings})

    with pytest.raises(ConfigError, match=key):
        prepare(ModelConfig(name="tiny", kind="hf", path=str(tiny_model)), TARGET, workload, BenchConfig(), tmp_path)


@pytest.mark.parametrize(
    ("prompt", "output", "window", "longest"),
    [
        (8, 3, 16, DECODE_MAX_LENGTH),  # the decode check's prompts and continuations are the longest
        (200, 50, 128, 250),  # the longest request is
        (8, 3, 512, 512),  # the teacher-forced accuracy windows are
    ],
)
def test_the_measuring_engine_takes_every_sequence_the_measurement_feeds_it(
    tmp_path: Path, prompt: int, output: int, window: int, longest: int
) -> None:
    workload = WorkloadConfig(name="w", prompt_lengths=[prompt], output_lengths=[output], eval_window_len=window)
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    model = ResolvedModel("m", tmp_path, "k")
    prep = Prepared(model, Reference(tmp_path / "ref.npz"), TARGET, workload, BenchConfig(), tmp_path, "")
    built = Built(tmp_path, "key", "sha", [], cached=True, seconds=0.0, build_seconds=0.0)
    assert prep.measure_job(CandidateConfig(engine="torch"), built).runtime.max_length == longest
