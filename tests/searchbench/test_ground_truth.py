"""Resumability and failure recording of the ground truth. The launcher here stands in for the child
processes only: it hands back hand-made results, because what is tested is the bookkeeping."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import BenchConfig, TargetConfig, WorkloadConfig
from autoopt.digest import package_digest
from autoopt.jobs.launch import JobFailed
from autoopt.jobs.prepare import Prepared
from autoopt.searchbench import ground_truth
from autoopt.searchbench.grid import Grid
from autoopt.searchbench.ground_truth import GroundTruth, fingerprint, measure_grid, truth_path
from tests.searchbench.conftest import synthetic


class _Jobs:
    """What `measure_grid` needs of `Prepared`: a build job and a measure job per candidate."""

    def build_job(self, c: Any) -> tuple[str, Any]:
        return ("build", c)

    def measure_job(self, c: Any, built: Any) -> tuple[str, Any]:
        return ("measure", c)


class _Launcher:
    def __init__(self, stop_after: int | None = None):
        self.measured: list[Any] = []
        self.stop_after = stop_after

    def launch(self, job: tuple[str, Any]) -> Any:
        kind, c = job
        if kind == "build":
            return SimpleNamespace()
        if self.stop_after is not None and len(self.measured) == self.stop_after:
            raise KeyboardInterrupt
        self.measured.append(c)
        r = synthetic(c)
        if isinstance(r, str):
            raise JobFailed(r)
        return r


def _measure(grid: Grid, path: Path, launcher: _Launcher, lines: list[str]) -> GroundTruth:
    truth = GroundTruth.open(path, {"model": "m"})
    return measure_grid(grid, cast(Prepared, _Jobs()), truth, launcher, say=lines.append)


def test_an_interrupted_run_continues_where_it_stopped(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    first, lines = _Launcher(stop_after=3), []
    with pytest.raises(KeyboardInterrupt):
        _measure(grid, path, first, lines)
    assert len(GroundTruth.load(path).entries) == 3
    assert lines[-1].startswith("[3/8] ")

    second = _Launcher()
    truth = _measure(grid, path, second, lines)

    assert len(second.measured) == len(grid) - 3
    assert not [c for c in second.measured if c in first.measured[:3]]
    assert set(truth.entries) == {p.key for p in grid.points}
    assert "3 of 8 candidates already measured, 5 to go" in lines[-6]
    assert len(_measure(grid, path, _Launcher(), lines).entries) == len(grid)  # nothing left: nothing launched


def test_failures_are_recorded_with_their_reason_and_results_survive_a_reload(grid: Grid, tmp_path: Path) -> None:
    truth = _measure(grid, tmp_path / "truth.json", _Launcher(), [])
    reloaded = GroundTruth.load(truth.path)

    failed = [e for e in reloaded.entries.values() if e.failed]
    assert [e.failed for e in failed] == ["build failed (test)"]
    assert all(e.result is not None for e in reloaded.entries.values() if not e.failed)
    some = next(iter(truth.entries))
    assert reloaded.entries[some].result == truth.entries[some].result


def test_a_file_measured_under_another_fingerprint_is_refused(grid: Grid, tmp_path: Path) -> None:
    truth = _measure(grid, tmp_path / "truth.json", _Launcher(stop_after=None), [])
    with pytest.raises(ConfigError, match="measured under other model"):
        GroundTruth.open(truth.path, {"model": "other"})


def test_a_change_to_autoopts_code_measures_a_new_ground_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a study's: a fixed pass or engine must not extend a grid measured, or failed, under the old code."""
    prep = cast(Prepared, SimpleNamespace(
        model=SimpleNamespace(key="k", name="m"), reference_sha256="sha",
        target=TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test"),
        workload=WorkloadConfig(name="w"), bench=BenchConfig()))
    assert fingerprint(prep)["code"] == package_digest("autoopt")
    before = truth_path(tmp_path, prep)
    monkeypatch.setattr(ground_truth, "package_digest", lambda package: "fedcba9876543210")
    assert truth_path(tmp_path, prep) != before
