"""Start several processes so that they do one thing at the same moment: for races on shared stores."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

_WAIT_FOR_GO = """
import sys, time
from pathlib import Path
folder, name, index = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(folder / f"ready-{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
"""


def run_together(setup: str, act: str, folder: Path, names: list[str], timeout_s: float = 120) -> list[str]:
    """One process per name runs `setup` (imports, before the signal), then `act` with `folder` and `name` bound,
    all released at once. Returns the last stderr line of each process that failed: empty when all succeeded."""
    procs = [subprocess.Popen([sys.executable, "-c", f"{setup}\n{_WAIT_FOR_GO}\n{act}", str(folder), name, str(i)],
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for i, name in enumerate(names)]
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("ready-*"))) < len(procs):
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "a process did not start"
        time.sleep(0.05)
    (folder / "go").touch()
    errors = [p.communicate(timeout=timeout_s)[1] for p in procs]
    return [(e.strip().splitlines() or ["no output"])[-1] for p, e in zip(procs, errors, strict=True) if p.returncode]
