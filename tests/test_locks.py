"""Temporary folders that a process killed outright leaves behind are removed by the next process that makes
one of the same kind, and never while their owner lives."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autoopt.locks import UNCLAIMED_AFTER_S, ClaimedFolder
from autoopt.models.cache import ensure_folder

PREFIX = ".model-run-"


def _claiming_process(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """Another process that claims a folder in `parent` and holds it until killed."""
    code = (
        "import sys, time\nfrom autoopt.locks import ClaimedFolder\n"
        f"folder = ClaimedFolder({str(parent)!r}, {PREFIX!r})\nprint(folder.path, flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_folder_whose_owner_was_killed_is_removed_and_a_living_owner_s_kept(tmp_path: Path) -> None:
    killed, abandoned = _claiming_process(tmp_path)
    alive, in_use = _claiming_process(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert abandoned.is_dir()

        mine = ClaimedFolder(tmp_path, PREFIX)

        assert not abandoned.exists()
        assert in_use.is_dir()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_use.name, mine.path.name])
        mine.cleanup()
        assert not mine.path.exists()
    finally:
        alive.kill()
        alive.wait()


def test_an_unclaimed_folder_is_removed_only_once_old(tmp_path: Path) -> None:
    young, old, other = tmp_path / f"{PREFIX}young", tmp_path / f"{PREFIX}old", tmp_path / ".other-run-old"
    for folder in (young, old, other):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"\0")
    past = time.time() - UNCLAIMED_AFTER_S - 60
    for folder in (old, other):
        os.utime(folder, (past, past))

    ClaimedFolder(tmp_path, PREFIX).cleanup()

    assert young.is_dir() and other.is_dir() and not old.exists()


def test_a_model_build_left_half_done_by_a_killed_builder_is_started_over(tmp_path: Path) -> None:
    folder = tmp_path / "builtin-abc"
    left = tmp_path / ".builtin-abc.tmp"  # a builder killed outright, after the lock it held was released
    left.mkdir()
    (left / "half-written.bin").write_bytes(b"\0")

    ensure_folder(folder, lambda staging: (staging / "config.json").write_text("{}"))

    assert [p.name for p in folder.iterdir()] == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builtin-abc", "builtin-abc.lock"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to act as another user")
def test_another_user_s_folder_it_may_not_read_is_left_alone() -> None:
    with tempfile.TemporaryDirectory() as shared:  # in /tmp: pytest's own folders are closed to other users
        os.chmod(shared, 0o1777)  # as /tmp
        theirs = ClaimedFolder(Path(shared), "autoopt_genai_")  # root's, mode 0700
        theirs._claim.close()  # abandoned
        code = f"from autoopt.locks import ClaimedFolder\nClaimedFolder({shared!r}, 'autoopt_genai_').cleanup()\n"

        if _as_nobody("import autoopt.locks").returncode != 0:
            pytest.skip("this checkout or its Python is not readable by another user")

        run = _as_nobody(code)

        assert run.returncode == 0, run.stderr[-2000:]
        assert theirs.path.is_dir()


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True)
