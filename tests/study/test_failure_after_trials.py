"""A child that crashes or times out after the trials (runoff, confirmation) ends the sweep in one line
naming the fix, with its traceback in the workspace's logs: never a bare JobFailed traceback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import optuna
import pytest
from rich.console import Console

from autoopt import pareto
from autoopt.config.schema import (
    BenchConfig,
    CandidateConfig,
    ExportConfig,
    ModelConfig,
    SearchConfig,
    SpaceConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
)
from autoopt.jobs.launch import JobFailed
from autoopt.study.progress import SweepProgress
from autoopt.study.record import TrialRecord, remeasured
from autoopt.study.runner import _confirm, _runoff, export_measured, with_artifacts
from autoopt.study.summary import Summary, SweepError, summary_of
from tests.study.results import result


class TimingOut:
    def launch(self, job: Any) -> Any:
        raise JobFailed("SpeedJob timed out after 600s", "the child's log")


def _sweep(tmp_path: Path) -> tuple[Summary, Any, SweepConfig]:
    points = [pareto.Point("0", (10.0, 1.0, 0.0)), pareto.Point("1", (5.0, 1.0, 0.0)), pareto.Point("2", (5.1, 1.0, 0.0))]
    records = {p.key: TrialRecord(CandidateConfig(threads=int(p.key) + 1), p.key, key=p.key,
                                  result=result(p.objectives[0], 1.0, 1.0, CandidateConfig(threads=int(p.key) + 1)))
               for p in points}
    summary = Summary(points, points, points[1:], points[0], (20.0, 2.0, 1.0), 1.0, points[1], "fastest", records)
    prep = SimpleNamespace(workload=WorkloadConfig(name="w"), bench=BenchConfig(), reference=SimpleNamespace(path="r"))
    cfg = SweepConfig(target=TargetConfig(name="cpu"), model=ModelConfig(), workload=WorkloadConfig(name="w"),
                      space=SpaceConfig(name="s"), cache_dir=str(tmp_path / "cache"), workspace=str(tmp_path / "ws"))
    return summary, prep, cfg


@pytest.mark.parametrize(("step", "what"), [(_confirm, "timing trial 1 against the fp32 reference"),
                                            (_runoff, "the runoff of trials 1, 2")])
def test_a_child_failing_after_the_trials_ends_the_sweep_in_one_line(step: Any, what: str, tmp_path: Path) -> None:
    summary, prep, cfg = _sweep(tmp_path)

    with pytest.raises(SweepError) as err:
        step(summary, prep, cfg, TimingOut(), SweepProgress(1))

    message = str(err.value)
    assert message.startswith(f"{what} failed: SpeedJob timed out after 600s")
    assert "search.confirm_rounds=0" in message and "\n" not in message
    [log_file] = (tmp_path / "ws" / "logs").iterdir()
    assert str(log_file) in message and "the child's log" in log_file.read_text()


def test_a_rebuild_failing_at_export_ends_the_sweep_in_one_line(tmp_path: Path) -> None:
    summary, prep, cfg = _sweep(tmp_path)
    chosen = summary.records[summary.chosen.key].result
    assert chosen is not None and not Path(chosen.build.artifact).is_dir()  # gone: the export rebuilds it
    prep = SimpleNamespace(**vars(prep), reference_sha256=chosen.reference_sha256, build_job=lambda c: c)

    with pytest.raises(SweepError) as err:
        export_measured(summary, prep, cfg, {}, tmp_path / "bundle", TimingOut())

    assert str(err.value).startswith("rebuilding trial 1 failed: SpeedJob timed out after 600s")
    assert "run the same command again" in str(err.value) and "confirm_rounds" not in str(err.value)


class Rebuilding:
    """Rebuilds every artifact as it was measured (the same files): records which candidates it built."""

    def __init__(self, tmp_path: Path) -> None:
        self.built: list[int] = []
        self.folder = tmp_path

    def launch(self, candidate: Any) -> Any:
        self.built.append(candidate.threads - 1)  # `_sweep`'s trial number
        return SimpleNamespace(sha256="sha", artifact=self.folder / f"rebuilt{candidate.threads - 1}")


@pytest.mark.parametrize(("confirm_rounds", "rebuilt"), [(3, [0, 1, 2]), (0, [1])])
def test_the_artifacts_the_steps_after_the_trials_load_are_rebuilt_where_the_cache_lost_them(
    confirm_rounds: int, rebuilt: list[int], tmp_path: Path
) -> None:
    """The chosen trial, and with the timings after the trials due the reference and the runoff's contenders
    (trials 1 and 2, within 5 %)."""
    summary, prep, cfg = _sweep(tmp_path)
    cfg = SweepConfig(**{**vars(cfg), "search": SearchConfig(confirm_rounds=confirm_rounds)})
    prep = SimpleNamespace(**vars(prep), build_job=lambda c: c)
    launcher = Rebuilding(tmp_path)

    present = with_artifacts(summary, prep, cfg, launcher, optuna.create_study())

    assert launcher.built == rebuilt
    for key in map(str, rebuilt):  # the same files: the figures stand, the artifact is the rebuilt one
        after, before = present.records[key].result, summary.records[key].result
        assert after.build.artifact == tmp_path / f"rebuilt{key}" and after.speed == before.speed


class RebuildingDifferently:
    """Rebuilds trials 1 and 2 with other files (measured again: 8 and 9 ms, no longer the fastest), the others as
    measured."""

    AGAIN_MS: ClassVar[dict[int, float]] = {1: 8.0, 2: 9.0}

    def __init__(self, tmp_path: Path) -> None:
        self.jobs: list[tuple[str, int]] = []
        self.folder = tmp_path

    def launch(self, job: Any) -> Any:
        kind, candidate = job[0], job[1]
        trial = candidate.threads - 1
        self.jobs.append((kind, trial))
        if kind == "build":
            return SimpleNamespace(sha256="other" if trial in self.AGAIN_MS else "sha",
                                   artifact=self.folder / f"rebuilt{trial}")
        built = job[2]
        again = result(self.AGAIN_MS[trial], 1.0, 1.0, candidate)
        return replace(again, build=replace(again.build, artifact=built.artifact, sha256=built.sha256))


def test_a_trial_measured_again_after_the_search_moves_the_front_and_the_pick(tmp_path: Path) -> None:
    """Its new figures are its point's; the pick taken again from them calls on trial 2's artifact, checked in turn
    (and measured again: the pick moves to trial 3), and on the reference's (confirmed against), checked once."""
    _, prep, cfg = _sweep(tmp_path)
    target = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")
    cfg = SweepConfig(**{**vars(cfg), "search": SearchConfig(confirm_rounds=3),
                         "export": ExportConfig(pick="min_latency"), "target": target})
    records = {str(n): TrialRecord(CandidateConfig(threads=n + 1), str(n), key=str(n),
                                   result=result(ms, 1.0, 1.0, CandidateConfig(threads=n + 1)))
               for n, ms in enumerate((10.0, 5.0, 6.0, 7.0))}
    summary = summary_of(records, cfg.search, cfg.export, cfg.target)
    assert summary.chosen.key == "1"
    prep = SimpleNamespace(**vars(prep), target=cfg.target, build_job=lambda c: ("build", c),
                           measure_job=lambda c, built: ("measure", c, built))
    launcher = RebuildingDifferently(tmp_path)
    study = optuna.create_study()

    present = with_artifacts(summary, prep, cfg, launcher, study)

    assert launcher.jobs == [("build", 0), ("build", 1), ("measure", 1), ("build", 2), ("measure", 2), ("build", 3)]
    assert [p.objectives[0] for p in present.points] == [10.0, 8.0, 9.0, 7.0]
    assert present.chosen.key == "3" and present.remeasured == {"1", "2"} and present.checked == {"0", "1", "2", "3"}
    assert present.records["3"].result.speed == records["3"].result.speed  # the same files: its figures stand
    assert {key: r.speed for key, r in remeasured(study).items()} == {k: present.records[k].result.speed for k in "12"}


def test_the_live_line_of_a_resumed_study_starts_at_its_front_size() -> None:
    progress = SweepProgress(4, front=3)
    console = Console(record=True, width=200)
    console.print(progress._progress)  # the line as it is drawn

    assert "front 3" in console.export_text()
