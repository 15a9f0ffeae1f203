"""What a run prepares once: a workload its evaluation text cannot serve fails there, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import BenchConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.prepare import prepare

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
