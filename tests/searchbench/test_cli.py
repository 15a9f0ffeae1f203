"""The search benchmark's command line refuses what it cannot replay, in one line."""

from __future__ import annotations

import subprocess
import sys


def test_the_serving_objective_is_refused_in_one_line_before_any_measurement(tmp_path) -> None:
    cmd = [sys.executable, "-m", "autoopt.searchbench", "search.objective=serving", f"workspace={tmp_path}"]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "search.objective=serving" in proc.stderr
    assert not (tmp_path / "searchbench").exists()
