from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoopt.config.runtime import RUNTIME_ENV
from autoopt.jobs.launch import InProcessLauncher, JobFailed, SubprocessLauncher
from autoopt.progress import listening
from tests.jobs.jobs_for_tests import Echo, Echoed, QuickTimeout, SpawningTimeout


def test_child_result_comes_back_typed_with_the_job_and_runtime_environment() -> None:
    result = SubprocessLauncher().launch(Echo("hi"))

    assert result == Echoed("HI", "set-by-job", RUNTIME_ENV["MALLOC_TRIM_THRESHOLD_"])


def test_the_steps_a_child_says_reach_the_listener_of_the_process_that_launched_it() -> None:
    heard: list[str] = []
    with listening(heard.append):
        result = SubprocessLauncher().launch(Echo("hi", "say"))
    assert heard == ["first hi", "second"] and result.text == "HI"
    assert InProcessLauncher().launch(Echo("x", "say")).text == "X"  # nobody listening: nothing to tell
    with listening(heard.append):
        InProcessLauncher().launch(Echo("in", "say"))
    assert heard[2:] == ["first in", "second"]


def test_child_exception_becomes_one_line_reason_with_the_traceback_as_detail() -> None:
    with pytest.raises(JobFailed) as failed:
        SubprocessLauncher().launch(Echo("x", "raise"))

    assert failed.value.reason == "ValueError: cannot echo x"
    assert "Traceback" in failed.value.detail


def test_child_that_dies_without_a_result_is_a_failure_naming_its_exit_code() -> None:
    with pytest.raises(JobFailed, match="died with exit code 3 and no result"):
        SubprocessLauncher().launch(Echo("x", "die"))


def test_a_child_killed_while_writing_its_result_fails_that_job_naming_the_file() -> None:
    with pytest.raises(JobFailed) as failed:
        SubprocessLauncher().launch(Echo("x", "torn"))

    reason = failed.value.reason
    assert reason.startswith("Echo exited with code -9 leaving an unreadable result ") and "\n" not in reason
    assert reason.endswith("out.json")


def test_child_past_its_timeout_is_stopped_and_reported() -> None:
    with pytest.raises(JobFailed, match="QuickTimeout timed out after 1s"):
        SubprocessLauncher().launch(QuickTimeout("x", "hang"))


def test_a_stopped_child_takes_the_processes_it_started_with_it(tmp_path: Path) -> None:
    """The genai builder, a child's child, went on writing into the build cache after a sweep was stopped."""
    pid_file = tmp_path / "pid"

    with pytest.raises(JobFailed, match="timed out"):
        SubprocessLauncher().launch(SpawningTimeout(str(pid_file), "spawn"))

    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_job_whose_parent_is_killed_outright_ends_with_what_it_started(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) leaves the parent no chance to stop its job: the job must notice by itself."""
    pid_file = tmp_path / "pid"
    launch = ("from autoopt.jobs.launch import SubprocessLauncher; from tests.jobs.jobs_for_tests import Echo; "
              f"SubprocessLauncher().launch(Echo({str(pid_file)!r}, 'spawn'))")
    parent = subprocess.Popen([sys.executable, "-c", launch], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert parent.poll() is None and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        job = _parent_of(grandchild)
        parent.kill()
        parent.wait()

        deadline = time.monotonic() + 10
        while (_alive(job) or _alive(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        parent.kill()
    assert not _alive(job) and not _alive(grandchild)


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_in_process_launcher_round_trips_and_fails_the_same_way() -> None:
    assert InProcessLauncher().launch(Echo("hi")).text == "HI"
    with pytest.raises(JobFailed) as failed:
        InProcessLauncher().launch(Echo("x", "raise"))
    assert failed.value.reason == "ValueError: cannot echo x"
