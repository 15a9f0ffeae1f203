"""scripts/device_check.sh, the prepared device script: its CPU-safe parts (it is run for real on a card)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "device_check.sh"


def test_device_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)

    assert proc.returncode == 0, proc.stderr


def test_unknown_step_stops_with_the_list_of_steps_before_running_anything(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "nope"], capture_output=True, text=True, env={"OUT": str(tmp_path),
                                                                                          "PATH": "/usr/bin:/bin"})

    assert proc.returncode == 2
    assert "unknown step nope; steps: setup env bench tests sweep late" in proc.stderr
    assert (tmp_path / "summary.txt").read_text() == ""
