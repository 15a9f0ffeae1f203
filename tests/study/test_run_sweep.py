"""The sweep's loop around the trials, with preparation, launcher and tracker replaced."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from autoopt.config.schema import BenchConfig, ModelConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.launch import JobFailed
from autoopt.study import runner
from autoopt.study.summary import SweepError

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test",
                      engines=["torch"], precisions=["fp32"])
WORKLOAD = WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[3])


class RefusingLauncher:
    def launch(self, job: Any) -> Any:
        raise JobFailed("RuntimeError: the build crashed", "traceback ...")


class RecordingTracker:
    """Keeps what the sweep logs per trial: (number, state, reason)."""

    made: list[RecordingTracker] = []

    def __init__(self, *args: Any) -> None:
        self.trials: list[tuple[int, str, str | None]] = []
        RecordingTracker.made.append(self)

    @contextmanager
    def start_parent(self, *args: Any) -> Iterator[str]:
        yield "parent"

    def log_trial(self, number: int, params: Any, metrics: Any, state: str, reason: str | None = None,
                  result_json: Any = None) -> str:
        self.trials.append((number, state, reason))
        return f"run-{number}"


def test_a_failed_reference_is_recorded_in_the_tracker_before_the_sweep_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prep = SimpleNamespace(target=TARGET, workload=WORKLOAD, bench=BenchConfig(), reference_sha256="ref",
                           model=SimpleNamespace(name="m", key="m-key", architecture="Qwen2ForCausalLM"),
                           build_job=lambda candidate: candidate)
    monkeypatch.setattr(runner, "prepare", lambda *args, **kwargs: prep)
    monkeypatch.setattr(runner, "Tracker", RecordingTracker)
    cfg = SweepConfig(target=TARGET, model=ModelConfig(name="m", kind="hf", path="unused"), workload=WORKLOAD,
                      space=SpaceConfig(name="t", engine=["torch"], quant=["none"], threads=[1]),
                      cache_dir=str(tmp_path), workspace=str(tmp_path))

    with pytest.raises(SweepError, match=r"trial 0\) failed"):
        runner.run_sweep(cfg, {}, RefusingLauncher())

    assert RecordingTracker.made[-1].trials == [(0, "failed", "RuntimeError: the build crashed")]
