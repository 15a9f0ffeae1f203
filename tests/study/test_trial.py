"""Each branch of one trial: pruned before any work, measured, reused, failed, and a failure remembered."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoopt.config.schema import (
    BenchConfig,
    ModelConfig,
    SpaceConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
)
from autoopt.jobs.launch import InProcessLauncher, JobFailed
from autoopt.jobs.prepare import Prepared, prepare
from autoopt.study.record import TrialRecord
from autoopt.study.trial import Known, run_trial

TORCH_FP32 = {"engine": "torch", "torch.quant": "none", "torch.kv_cache": "dynamic", "torch.threads": 1,
              "torch.batch_size": 0, "torch.warmup": "one"}


class RefusingLauncher:
    """Fails any job it is given, as a crashed child would; counts the attempts."""

    def __init__(self) -> None:
        self.calls = 0

    def launch(self, job):  # noqa: ANN001, ANN201 - the Launcher protocol
        self.calls += 1
        raise JobFailed("RuntimeError: the build crashed", "traceback ...")


@pytest.fixture(scope="module")
def setup(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Prepared, SweepConfig]:
    target = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test",
                          engines=["torch"], precisions=["fp32", "bf16", "int8"])
    workload = WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[3], eval_windows=2, eval_window_len=16)
    bench = BenchConfig(warmup_runs=1, min_runs=2, min_seconds=0.0)
    model = ModelConfig(name="tiny", kind="hf", path=str(tiny_model))
    space = SpaceConfig(name="t", engine=["torch", "ort"], quant=["none", "bf16"], threads=[1])
    cfg = SweepConfig(target=target, model=model, workload=workload, space=space, bench=bench,
                      cache_dir=str(tmp_path_factory.mktemp("cache")), workspace="unused")
    return prepare(model, target, workload, bench, Path(cfg.cache_dir)), cfg


def _study(*enqueued: dict) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * 3)
    for params in enqueued:
        study.enqueue_trial(params)
    return study


def test_candidate_the_target_cannot_run_is_pruned_with_its_reason_before_any_work(setup) -> None:
    prep, cfg = setup
    study = _study({"engine": "ort", "ort.quant": "none", "ort.graph_opt": "all", "ort.threads": 1,
                    "ort.batch_size": 0, "ort.warmup": "one", "ort.fuse": False})
    launcher = RefusingLauncher()

    outcome = run_trial(study, prep, cfg, Known(), launcher)

    assert outcome.state == "pruned" and launcher.calls == 0
    assert "engine=ort is not available on target=cpu" in (outcome.record.reason or "")
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED


@pytest.mark.slow
def test_measured_then_reused_never_measures_the_same_candidate_twice(setup) -> None:
    prep, cfg = setup
    study, known = _study(TORCH_FP32, TORCH_FP32), Known()

    first = run_trial(study, prep, cfg, known, InProcessLauncher())
    refusing = RefusingLauncher()
    second = run_trial(study, prep, cfg, known, refusing)

    assert first.state == second.state == "complete"
    assert refusing.calls == 0 and second.reused and second.record.reused_from == 0
    stored = TrialRecord.read(study.trials[1])
    assert stored.result == first.record.result and stored.result.accuracy.top1_agreement == 1.0
    assert study.trials[1].values == study.trials[0].values
    assert Known.of(study).complete.keys() == {first.record.key}


def test_a_failed_candidate_is_recorded_and_never_built_again_in_the_study(setup) -> None:
    prep, cfg = setup
    bf16 = {**TORCH_FP32, "torch.quant": "bf16"}
    study, known, launcher = _study(bf16, bf16), Known(), RefusingLauncher()

    first = run_trial(study, prep, cfg, known, launcher)
    second = run_trial(study, prep, cfg, Known.of(study), launcher)

    assert first.state == second.state == "failed" and launcher.calls == 1
    assert first.record.reason == "RuntimeError: the build crashed" and first.record.detail
    assert second.record.reused_from == 0 and second.reused
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED  # samplers learn from it; Known reads trial 0
