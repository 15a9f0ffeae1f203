"""The sweep's loop around the trials: a reference that cannot be measured is still recorded in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest

from autoopt.config.schema import ModelConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.launch import JobFailed
from autoopt.study.runner import run_sweep
from autoopt.study.summary import SweepError

pytestmark = pytest.mark.slow  # a real study, MLflow store and tiny model reference: about 10 s

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test",
                      engines=["torch"], precisions=["fp32"])
WORKLOAD = WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[3], eval_windows=2, eval_window_len=32)


class CrashingLauncher:
    """Every build crashes, as a child process that died would report it."""

    def launch(self, job: Any) -> Any:
        raise JobFailed("RuntimeError: the build crashed", "traceback ...")


def test_a_failed_reference_is_recorded_in_mlflow_before_the_sweep_stops(tiny_model: Path, tmp_path: Path) -> None:
    cfg = SweepConfig(target=TARGET, model=ModelConfig(name="tiny", kind="hf", path=str(tiny_model)),
                      workload=WORKLOAD, space=SpaceConfig(name="t", engine=["torch"], quant=["none"], threads=[1]),
                      cache_dir=str(tmp_path / "cache"), workspace=str(tmp_path / "ws"))

    with pytest.raises(SweepError, match=r"trial 0\) failed"):
        run_sweep(cfg, {}, CrashingLauncher())

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    trials = [r for r in runs if r.info.run_name == "trial-0"]
    assert [(r.data.tags["autoopt.state"], r.data.tags["autoopt.reason"]) for r in trials] == [
        ("failed", "RuntimeError: the build crashed")
    ]
    assert [r.info.status for r in runs if r.info.run_name.startswith("sweep-")] == ["FAILED"]
