"""scripts/device_check.sh, the prepared device script: its CPU-safe parts (it is run for real on a card)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
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


_FAKE_PYTHON = """#!/bin/bash
# Stands in for python: the sweep writes its front, then logs more (as the real one does after its reports).
if [ "$1" = "-m" ]; then
    sleep 1.1
    mkdir -p "$AUTOOPT_WORKSPACE/reports/study/stamp"
    echo "| front |" > "$AUTOOPT_WORKSPACE/reports/study/stamp/front.md"
    sleep 1.1
    echo "exported"
fi
"""


def test_the_sweep_step_keeps_the_front_the_sweep_wrote_though_it_logged_after_it(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {"OUT": str(out), "PY": str(fake), "AUTOOPT_WORKSPACE": str(tmp_path / "ws"), "PATH": "/usr/bin:/bin"}

    proc = subprocess.run(["bash", str(SCRIPT), "sweep"], capture_output=True, text=True, env=env)

    assert proc.returncode == 0, proc.stderr
    assert (out / "sweep_front.md").read_text() == "| front |\n"
    assert "exported" in (out / "sweep.log").read_text()
    assert "sweep  rc=0" in (out / "summary.txt").read_text()
    with tarfile.open(out / "workspace.tar.gz") as tar:  # the logs and reports, tracebacks of failed trials among them
        assert "./reports/study/stamp/front.md" in tar.getnames()


_STOP_AFTER_FIRST_TEST = """
import os
import signal


def pytest_runtest_logfinish(nodeid, location):
    os.kill(os.getpid(), signal.SIGINT)  # as the step's timeout does
"""


def test_a_tests_step_cut_short_still_names_the_tests_that_ran_and_what_they_said(tmp_path: Path) -> None:
    (tmp_path / "stop_after_first_test.py").write_text(_STOP_AFTER_FIRST_TEST)
    out = tmp_path / "out"
    env = {"OUT": str(out), "PY": sys.executable, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path),
           "PYTEST_ADDOPTS": "-p stop_after_first_test", "AUTOOPT_WORKSPACE": str(tmp_path / "ws"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}

    proc = subprocess.run(["bash", str(SCRIPT), "tests"], capture_output=True, text=True, env=env, timeout=300)

    assert proc.returncode == 0, proc.stderr
    first = "tests/gpu/test_cuda_batching.py::test_torch_on_cuda_decodes_each_row_of_a_mixed_batch_as_alone[auto]"
    report = (out / "pytest.txt").read_text()
    assert first in report
    assert "KeyboardInterrupt" in report and "SKIPPED [1]" in report  # the summary, with each test's reason
    assert "tests  rc=2 " in (out / "summary.txt").read_text()


def test_the_tests_beside_the_sweep_may_run_as_long_as_it(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text('#!/bin/bash\n[ "$1" = "-" ] && cat > /dev/null\nexit 0\n')  # "-": the bandwidth heredoc
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {"OUT": str(out), "PY": str(fake), "AUTOOPT_WORKSPACE": str(tmp_path / "ws"), "PATH": "/usr/bin:/bin",
           "SWEEP_S": "240"}

    proc = subprocess.run(["bash", str(SCRIPT), "late"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, proc.stderr
    limits = dict(re.findall(r"^(\w+)\s+rc=0\s+\d+s \(limit (\d+)s\)$", (out / "summary.txt").read_text(), re.M))
    assert limits == {"tests": "240", "sweep": "240"}
