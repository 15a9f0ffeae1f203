"""Re-running the same command resumes a study only when its fp32 reference (trial 0) can still be compared to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from autoopt.config.errors import ConfigError
from autoopt.config.schema import BenchConfig, ModelConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.env import console_script
from autoopt.space.sample import reference_params
from autoopt.study.runner import open_study
from tests.together import run_together

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test",
                      engines=["torch"], precisions=["fp32"])
WORKLOAD = WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[3])
SPACE = SpaceConfig(name="t", engine=["torch"], quant=["none"], threads=[1])


def _cfg(workspace: Path) -> SweepConfig:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return SweepConfig(target=TARGET, model=ModelConfig(name="m", kind="hf", path="unused"), workload=WORKLOAD,
                       space=SPACE, cache_dir=str(workspace), workspace=str(workspace))


PREP = SimpleNamespace(target=TARGET, workload=WORKLOAD, bench=BenchConfig(), model=SimpleNamespace(key="m-key"),
                       reference_sha256="ref")


@pytest.mark.parametrize(
    ("state", "said"),
    [(TrialState.RUNNING, "never finished"), (TrialState.FAIL, "failed"), (TrialState.PRUNED, "was pruned")],
)
def test_a_study_whose_reference_did_not_complete_is_refused_in_one_line(tmp_path: Path, state, said) -> None:
    cfg = _cfg(tmp_path)
    study, _ = open_study(cfg, PREP, "s", tmp_path)
    reference = study.ask()  # trial 0; RUNNING: the sweep was interrupted while measuring it
    if state != TrialState.RUNNING:
        study.tell(reference, state=state)

    with pytest.raises(ConfigError) as refused:
        open_study(cfg, PREP, "s", tmp_path)

    assert f"fp32 reference (trial 0) {said}" in str(refused.value) and "study.name=" in str(refused.value)
    assert f"{console_script('optuna')} delete-study --study-name s --storage sqlite:///{tmp_path / 'optuna.db'}" in str(refused.value)
    optuna.delete_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")  # what that command does
    assert open_study(cfg, PREP, "s", tmp_path)[0].trials[0].state == TrialState.WAITING  # the reference, anew


def test_a_study_interrupted_before_its_first_trial_resumes_with_the_reference_as_trial_0(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    open_study(cfg, PREP, "s", tmp_path)  # interrupted before asking anything: trial 0 still waits

    study, _ = open_study(cfg, PREP, "s", tmp_path)
    first = study.ask()

    assert first.number == 0 and study.trials[0].system_attrs["fixed_params"] == reference_params(SPACE)


@pytest.mark.parametrize("storage", ["foo://bar", "sqlite:////nonexistent/folder/optuna.db"])
def test_a_storage_that_cannot_be_opened_is_refused_in_one_line(tmp_path: Path, storage: str) -> None:
    cfg = _cfg(tmp_path)
    cfg = replace(cfg, study=replace(cfg.study, storage=storage))

    with pytest.raises(ConfigError, match=f"^study.storage={storage} cannot be opened: ") as refused:
        open_study(cfg, PREP, "s", tmp_path)

    assert "\n" not in str(refused.value)


def test_a_resumed_study_does_not_propose_its_first_run_s_candidates_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg = replace(cfg, search=replace(cfg.search, sampler="random"))

    def run_once() -> float:
        study, _ = open_study(cfg, PREP, "s", tmp_path)
        if not study.trials[0].state.is_finished():
            study.tell(study.ask(), (1.0, 1.0, 0.0))  # the reference
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, (x, x, 0.0))
        return x

    first, resumed = run_once(), run_once()

    assert first != resumed


def test_sweeps_opening_one_new_optuna_store_together_all_succeed(tmp_path: Path) -> None:
    names = ["study-a", "study-b", "study-c"]

    failed = run_together("from tests.study.test_resume import PREP, _cfg\nfrom autoopt.study.runner import open_study",
                          "open_study(_cfg(folder), PREP, name, folder)", tmp_path, names)

    assert failed == []
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert trials[0].system_attrs["fixed_params"] == reference_params(SPACE)
