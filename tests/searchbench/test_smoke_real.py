"""The smoke grid measured for real (four candidates, each built and measured in child processes), then
replayed: nothing replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _bench(workspace: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(workspace), "AUTOOPT_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "autoopt.searchbench", "space=smoke", "workload=smoke", "--seeds", "3",
           "--max-trials", "4", "--samplers", "random,tpe,nsga2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)


def test_smoke_grid_is_measured_once_and_replayed(tmp_path: Path, cache_dir: Path) -> None:
    proc = _bench(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (truth,) = (tmp_path / "searchbench").glob("*.json")
    entries = json.loads(truth.read_text())["entries"]
    assert len(entries) == 4 and all("result" in e for e in entries.values())
    (report,) = (tmp_path / "searchbench").glob(f"report-{truth.stem}-smoke-*")
    assert (report / "hv_vs_trials.png").is_file()
    curves = json.loads((report / "curves.json").read_text())
    assert curves["grid_size"] == 4
    for runs in curves["curves"].values():
        for c in runs:
            assert c["fraction"][1] == 0.0 and max(c["fraction"]) <= 1.0 + 1e-9
    for name in ("random", "tpe", "nsga2"):
        assert f"| {name} | 3 |" in proc.stdout

    again = _bench(tmp_path, cache_dir)  # the ground truth is complete: nothing is measured again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 of 4 candidates already measured, 0 to go" in again.stderr + again.stdout

    replayed = _bench(tmp_path, cache_dir, "--truth", str(truth), "--samplers", "tpe_s3")  # a file as it is
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert "| tpe_s3 | 3 |" in replayed.stdout and "to go" not in replayed.stderr + replayed.stdout

    # warm-started from a ground truth's front (here its own), each sampler is replayed twice, in its own folder
    warm = _bench(tmp_path, cache_dir, "--truth", str(truth), "--samplers", "tpe", "--prior", str(truth))
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert "| tpe | 3 |" in warm.stdout and "| tpe+warm | 3 |" in warm.stdout
    assert (tmp_path / "searchbench" / f"{report.name}-from-{truth.stem}" / "report.md").is_file()
