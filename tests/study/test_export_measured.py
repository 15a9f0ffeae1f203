"""Export ships only what was measured: a gone artifact is rebuilt (and measured again where the rebuild's files
differ, then held to the search's constraints), a changed one is refused, and so is a result measured against
another reference."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from autoopt import pareto
from autoopt.config.schema import (
    BenchConfig,
    CandidateConfig,
    ModelConfig,
    SpaceConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
)
from autoopt.digest import tree_sha256
from autoopt.jobs.confirm import Confirmation, Ratio, SpeedSample
from autoopt.jobs.launch import InProcessLauncher
from autoopt.passes.pipeline import artifact_sha256
from autoopt.study import runner
from autoopt.study.record import TrialRecord
from autoopt.study.runner import confirmed_block, export_measured, with_artifacts
from autoopt.study.summary import Summary, SweepError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def measured(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    from autoopt.jobs.prepare import prepare

    target = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")
    workload = WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[3], eval_windows=2, eval_window_len=16)
    bench = BenchConfig(warmup_runs=1, min_runs=2, min_seconds=0.0)
    model = ModelConfig(name="tiny", kind="hf", path=str(tiny_model))
    prep = prepare(model, target, workload, bench, tmp_path_factory.mktemp("cache"))
    launcher = InProcessLauncher()
    candidate = CandidateConfig(threads=1)
    result = launcher.launch(prep.measure_job(candidate, launcher.launch(prep.build_job(candidate))))
    cfg = SweepConfig(target=target, model=model, workload=workload, space=SpaceConfig(name="t"), bench=bench,
                      cache_dir="unused", workspace="unused")
    return prep, cfg, result


class CountingLauncher(InProcessLauncher):
    def __init__(self) -> None:
        self.jobs: list[str] = []

    def launch(self, job):  # noqa: ANN001, ANN201 - the Launcher protocol
        self.jobs.append(type(job).__name__)
        return super().launch(job)


def _summary(result, key: str = "0") -> Summary:
    point = pareto.Point(key, (1.0, 1.0, 0.0), {"candidate": "c"})
    record = TrialRecord(result.candidate, "c", key="k", result=result)
    return Summary([point], [point], [point], point, (1.0, 1.0, 0.05), 0.0, point, "only one", {key: record})


def test_an_artifact_gone_from_the_cache_is_rebuilt_and_its_figures_stand_where_its_files_are_the_same(
    measured, tmp_path: Path
) -> None:
    prep, cfg, result = measured
    gone = replace(result, build=replace(result.build, artifact=tmp_path / "cleared"))

    launcher = CountingLauncher()

    out = export_measured(_summary(gone), prep, cfg, {}, tmp_path / "bundle", launcher, study="s")

    assert launcher.jobs == ["BuildJob"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["measured_in"] == {"study": "s", "trial": 0, "measured_again": False}
    assert manifest["build"]["key"] == result.build.key and (out / "model" / "config.json").is_file()
    assert manifest["metrics"]["speed.output_tokens_per_s"]["value"] == result.speed.output_tokens_per_s


def test_the_bundle_carries_the_side_by_side_confirmation_as_the_speed_up_to_quote(measured, tmp_path: Path) -> None:
    prep, cfg, result = measured
    runs = [SpeedSample(100.0, {"e2e_p90": 10.0}, 5, other_cpu_share=0.02), SpeedSample(90.0, {}, 5, 0.31)]
    confirmation = Confirmation("e2e_p90", Ratio([4.0, 4.4, 3.9]), Ratio([3.5, 3.6, 3.2]), runs, runs)
    summary = _summary(result)

    out = export_measured(summary, prep, cfg, {}, tmp_path / "bundle", InProcessLauncher(), study="s",
                          confirmed=confirmed_block(confirmation, summary))

    confirmed = json.loads((out / "manifest.json").read_text())["measured_in"]["confirmed"]
    assert confirmed["output_tokens_per_s"] == {"median": 4.0, "low": 3.9, "high": 4.4, "rounds": [4.0, 4.4, 3.9]}
    assert confirmed["lower_e2e_p90"]["median"] == 3.5 and confirmed["contended"] is True
    readme = (out / "README.md").read_text()
    assert ("timed side by side: 4.00x the output tokens/s (range 3.90-4.40) and 3.50x lower e2e p90 "
            "(range 3.20-3.60), over 3 interleaved rounds") in " ".join(readme.split())
    assert "rerun on a quiet machine" in readme
    assert confirmed_block(None, summary) is None


def test_a_rebuild_whose_files_differ_is_measured_again(measured, tmp_path: Path) -> None:
    prep, cfg, result = measured
    other = replace(result, build=replace(result.build, artifact=tmp_path / "cleared", sha256="other files"))

    launcher = CountingLauncher()

    out = export_measured(_summary(other), prep, cfg, {}, tmp_path / "bundle", launcher)

    assert launcher.jobs == ["BuildJob", "MeasureJob"]  # rebuilt, then measured again before shipping
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build"]["key"] == result.build.key and manifest["measured_in"]["measured_again"] is True


def test_an_artifact_the_runner_already_checked_is_neither_hashed_nor_rebuilt_again(
    measured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chosen trial's files are hashed once after the search (`with_artifacts`), not again at export."""
    prep, cfg, result = measured
    hashed: list[Path] = []
    monkeypatch.setattr(runner, "artifact_sha256", lambda folder: hashed.append(folder) or artifact_sha256(folder))
    launcher = CountingLauncher()
    checked = with_artifacts(_summary(result), prep, replace(cfg, search=replace(cfg.search, confirm_rounds=0)),
                             launcher, optuna.create_study())

    export_measured(checked, prep, cfg, {}, tmp_path / "bundle", launcher)

    assert hashed == [Path(result.build.artifact)] and launcher.jobs == []


def test_a_remeasured_rebuild_that_misses_the_accuracy_bar_is_refused(measured, tmp_path: Path) -> None:
    prep, cfg, result = measured
    other = replace(result, build=replace(result.build, artifact=tmp_path / "cleared", sha256="other files"))
    strict = replace(cfg, search=replace(cfg.search, min_top1_agreement=1.01))  # no measurement meets it

    with pytest.raises(SweepError, match="trial 3, rebuilt and measured again, no longer meets accuracy_bar"):
        export_measured(_summary(other, "3"), prep, strict, {}, tmp_path / "bundle", InProcessLauncher())


def test_an_artifact_changed_since_its_measurement_is_refused(measured, tmp_path: Path) -> None:
    prep, cfg, result = measured
    copy = Path(shutil.copytree(result.build.artifact, tmp_path / "artifact"))
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    changed = replace(result, build=replace(result.build, artifact=copy))

    assert tree_sha256(copy) != result.build.sha256
    with pytest.raises(SweepError, match="changed since trial 0 measured it"):
        export_measured(_summary(changed), prep, cfg, {}, tmp_path / "bundle", InProcessLauncher())


def test_a_result_measured_against_another_reference_is_refused(measured, tmp_path: Path) -> None:
    prep, cfg, result = measured

    with pytest.raises(SweepError, match="another reference file"):
        export_measured(_summary(replace(result, reference_sha256="other")), prep, cfg, {}, tmp_path / "b",
                        InProcessLauncher())
