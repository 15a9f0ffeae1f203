"""A trial measured again after the search (its artifact gone, rebuilt with other files) keeps its new figures in
the study: the study's next run takes the rebuilt folder, where the trial's artifact was, for the one measured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from autoopt.config.schema import (
    CandidateConfig,
    ExportConfig,
    ModelConfig,
    SearchConfig,
    SpaceConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
)
from autoopt.passes.pipeline import artifact_sha256
from autoopt.study.record import TrialRecord
from autoopt.study.runner import with_artifacts
from autoopt.study.summary import Summary, SweepError, summarize
from tests.study.results import result

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")


class RebuildingWithOtherFiles:
    """Builds trial n's candidate (threads=n+1) into the folder its artifact had, with other files than those
    measured; measures the rebuild at 8 ms."""

    def __init__(self, builds: Path) -> None:
        self.jobs: list[str] = []
        self.builds = builds

    def launch(self, job: Any) -> Any:
        kind, candidate = job[0], job[1]
        self.jobs.append(kind)
        if kind == "build":
            artifact = self.builds / f"step{candidate.threads - 1}"
            artifact.mkdir(parents=True, exist_ok=True)
            (artifact / "weights.bin").write_text("rebuilt")
            return SimpleNamespace(sha256=artifact_sha256(artifact), artifact=artifact)
        again = result(8.0, 1.0, 1.0, candidate)
        return replace(again, build=replace(again.build, artifact=job[2].artifact, sha256=job[2].sha256))


def _study(tmp_path: Path) -> str:
    """The storage of study "s": the fp32 reference (10 ms) and trial 1 (5 ms), both artifacts gone from the build
    cache."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize"] * 3)
    for number, ms in enumerate((10.0, 5.0)):
        candidate = CandidateConfig(threads=number + 1)
        measured = result(ms, 1.0, 1.0, candidate)
        measured = replace(measured, build=replace(measured.build, artifact=tmp_path / "build" / f"step{number}"))
        trial = study.ask()
        TrialRecord(candidate, str(number), key=str(number), result=measured).write(trial)
        study.tell(trial, (ms, 1.0, 0.0))
    return storage


def _run(storage: str, cfg: SweepConfig, launcher: Any) -> Summary:
    """What a run of the sweep does after its search, on the study as stored."""
    study = optuna.load_study(study_name="s", storage=storage)
    prep = SimpleNamespace(target=cfg.target, build_job=lambda c: ("build", c),
                           measure_job=lambda c, built: ("measure", c, built))
    return with_artifacts(summarize(study, cfg.search, cfg.export, cfg.target), prep, cfg, launcher, study)


def _cfg(tmp_path: Path) -> SweepConfig:
    return SweepConfig(target=TARGET, model=ModelConfig(), workload=WorkloadConfig(name="w"),
                       space=SpaceConfig(name="s"), search=SearchConfig(confirm_rounds=0),
                       export=ExportConfig(pick="min_latency"), cache_dir=str(tmp_path), workspace=str(tmp_path))


def test_the_study_s_next_run_accepts_a_re_measured_trial_s_rebuilt_folder_with_its_new_figures(
    tmp_path: Path,
) -> None:
    storage, cfg, builds = _study(tmp_path), _cfg(tmp_path), tmp_path / "build"
    first = _run(storage, cfg, RebuildingWithOtherFiles(builds))
    assert first.remeasured == {"1"}  # trial 1 rebuilt with other files into its folder, measured again

    launcher = RebuildingWithOtherFiles(builds)
    again = _run(storage, cfg, launcher)

    assert launcher.jobs == []  # neither refused nor rebuilt: the folder is the one measured again
    assert again.chosen.key == "1" and again.chosen.objectives[0] == 8.0
    assert again.records["1"].result.build.sha256 == artifact_sha256(builds / "step1")
    assert again.remeasured == {"1"} and again.checked == {"1"}  # the bundle's manifest says measured_again


def test_a_re_measured_trial_s_folder_changed_in_place_afterwards_is_refused(tmp_path: Path) -> None:
    storage, cfg, builds = _study(tmp_path), _cfg(tmp_path), tmp_path / "build"
    _run(storage, cfg, RebuildingWithOtherFiles(builds))
    (builds / "step1" / "weights.bin").write_text("edited")

    with pytest.raises(SweepError, match=r"step1 changed since trial 1 measured it; remove that folder") as refused:
        _run(storage, cfg, RebuildingWithOtherFiles(builds))

    assert "\n" not in str(refused.value)
