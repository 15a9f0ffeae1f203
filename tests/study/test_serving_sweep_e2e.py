"""A real sweep with the serving objective on the built-in model: capacity searches in the measuring children,
the front by capacity, and the pick's load curve in the reports, its capacity in the bundle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_serving_sweep_reports_the_pick_s_load_curve_and_bundles_its_capacity(tmp_path: Path, cache_dir: Path) -> None:
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(tmp_path), "AUTOOPT_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "autoopt", "search.objective=serving", "workload=serve", "space=serving",
           "search.n_trials=2", "search.confirm_rounds=0", "workload.serving.duration_s=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the capacity (requests/s within every SLO)" in proc.stdout
    said_hv = re.search(r"hypervolume (\S+) \(reference point: fp32 capacity, fp32 cost, accuracy-bar loss(.*?)\)", proc.stdout)
    assert said_hv and (said_hv.group(2) != "") == (float(said_hv.group(1)) == 0)  # a 0 is explained
    (reports,) = (tmp_path / "reports").glob("*/*")
    curve = (reports / "load_curve.md").read_text()
    assert (reports / "load_curve.png").stat().st_size > 0
    capacity = float(re.search(r"Capacity ([0-9.]+) requests/s", curve).group(1))
    rows = [line.split(" | ") for line in curve.splitlines() if re.match(r"\| [0-9]", line)]
    assert capacity > 0 and capacity == max(float(r[0].strip("| ")) for r in rows if r[1] == "yes")
    (bundle,) = (tmp_path / "bundles").iterdir()
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
    assert metrics["serving.capacity_rps"]["value"] == pytest.approx(capacity, abs=0.005)
    assert f"capacity {capacity:.2f} requests/s" in (bundle / "README.md").read_text()
