"""export.dir is checked before the sweep: a folder of other files is refused, not wiped at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import ExportConfig, ModelConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.study.runner import run_sweep


class NoLauncher:
    def launch(self, job: object) -> object:
        raise AssertionError("the sweep must not start")


def test_a_sweep_refuses_an_export_dir_of_other_files_before_any_work(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    cfg = SweepConfig(target=TargetConfig(name="cpu"), model=ModelConfig(name="m", kind="hf", path="/nonexistent"),
                      workload=WorkloadConfig(name="w"), space=SpaceConfig(name="s"),
                      export=ExportConfig(dir=str(mine)), cache_dir=str(tmp_path / "cache"),
                      workspace=str(tmp_path / "ws"))

    with pytest.raises(ConfigError, match=rf"^export\.dir={mine} holds files but no manifest\.json"):
        run_sweep(cfg, {}, NoLauncher())  # type: ignore[arg-type]

    assert (mine / "thesis.tex").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no workspace, no cache: nothing ran
