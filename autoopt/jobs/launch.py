"""Run a job in a fresh Python process, so that its memory, threads and crashes stay its own; or in
this process, for tests.

A job is a frozen dataclass with `run() -> result` and a `result_type` that rebuilds its result from a
dict; both cross the process boundary as JSON (`autoopt.config.serde`), rebuilt by their own classes,
so the child needs no OmegaConf and nothing is pickled.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autoopt import progress
from autoopt.config.runtime import RUNTIME_ENV
from autoopt.config.serde import from_dict, to_dict

R = TypeVar("R")

_CHILD_ENV = {
    **RUNTIME_ENV,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Job(Protocol[R]):
    """What a launcher runs. `run` executes in the launched process; `env` adds environment variables
    the child must start with (they cannot be set after start); `timeout_s` bounds a child's wall time."""

    timeout_s: float

    def run(self) -> R: ...

    def env(self) -> dict[str, str]: ...

    @staticmethod
    def result_type() -> type[R]: ...


class JobFailed(RuntimeError):
    """The job raised, crashed or timed out. `reason` is one line; `detail` the traceback/log tail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def save_log(self, workspace: str | Path, prefix: str) -> Path:
        """Write the reason and the child's traceback to `<workspace>/logs/<prefix>-<time>.log`; return its path."""
        log_file = Path(workspace).expanduser().resolve() / "logs" / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(f"{self.reason}\n\n{self.detail}")
        return log_file


class Launcher(Protocol):
    def launch(self, job: Job[R]) -> R: ...


class SubprocessLauncher:
    """Each job in a new `python -m autoopt.jobs.launch` process with the runtime environment set. Where a
    progress listener is set here (`autoopt.progress.listening`), the steps the job says reach it as they come."""

    def launch(self, job: Job[R]) -> R:
        name = f"{type(job).__module__}:{type(job).__qualname__}"
        with tempfile.TemporaryDirectory(prefix="autoopt-job-") as tmp, _following(Path(tmp)) as steps:
            env = {**os.environ, **_CHILD_ENV, **job.env(), _PARENT: str(os.getpid()), **steps}
            src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
            src.write_text(json.dumps({"job": name, "payload": to_dict(job)}))
            cmd = [sys.executable, "-m", "autoopt.jobs.launch", str(src), str(dst)]
            # a session of its own, so that a timeout or a stop (Ctrl-C, SIGTERM: `Stopped` here) kills what the
            # job started too, such as the onnxruntime-genai builder, which would go on writing into the cache
            with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) as proc:
                try:
                    stdout, stderr = proc.communicate(timeout=job.timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    raise JobFailed(f"{type(job).__name__} timed out after {job.timeout_s:.0f}s") from None
                except BaseException:
                    _kill_group(proc)
                    raise
            tail = (stderr or stdout)[-3000:]
            if dst.exists():
                out = _read_result(dst)
                if out is None:  # a child killed while writing it, a full disk: this job failed, not the sweep
                    raise JobFailed(f"{type(job).__name__} exited with code {proc.returncode} leaving an unreadable "
                                    f"result {dst}", tail)
                if "error" in out:
                    raise JobFailed(out["error"], out.get("traceback", ""))
                return from_dict(job.result_type(), out["result"])
            raise JobFailed(f"{type(job).__name__} died with exit code {proc.returncode} and no result", tail)


def _read_result(path: Path) -> dict[str, Any] | None:
    """A child's result file as `_child` writes it, or None where it is not one (cut short, garbled)."""
    try:
        out = json.loads(path.read_text())
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError
        return None
    return out if isinstance(out, dict) and ("error" in out or "result" in out) else None


@contextlib.contextmanager
def _following(folder: Path) -> Iterator[dict[str, str]]:
    """The environment that has a job write its steps to a file in `folder`, followed for this process's listener
    while the job runs; {} where nobody listens."""
    heard = progress.listener()
    if heard is None:
        yield {}
        return
    path = folder / "progress.txt"
    follower = progress.Follower(path, heard)
    try:
        yield {progress.CHILD_ENV: str(path)}
    finally:
        follower.stop()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the job's process and every process it started (its session's group), and reap the job."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class InProcessLauncher:
    """Runs the job here, through the same serialization as a child, failing the same way: for tests."""

    def launch(self, job: Job[R]) -> R:
        rebuilt = from_dict(type(job), json.loads(json.dumps(to_dict(job))))
        try:
            result = rebuilt.run()
        except Exception as e:
            raise JobFailed(_one_line(e), traceback.format_exc()) from e
        return from_dict(job.result_type(), json.loads(json.dumps(to_dict(result))))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


_PARENT = "AUTOOPT_JOB_PARENT"  # the launching process's pid, set in the child's environment


def _end_with_parent(parent: int) -> None:
    """Kill this job's process group once `parent` is gone. A parent killed outright (SIGKILL, the OOM killer)
    stops nothing, and the job, in a session of its own, would run on orphaned with what it started (a build
    writing into the cache, a measurement taking the CPUs of the next run)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(0, signal.SIGKILL)

    if os.getpgid(0) == os.getpid():  # the leader of its own group, as SubprocessLauncher starts it: kill only that
        threading.Thread(target=watch, name="autoopt-parent-watch", daemon=True).start()


def _child(src: Path, dst: Path) -> None:
    if _PARENT in os.environ:
        _end_with_parent(int(os.environ[_PARENT]))
    try:
        spec = json.loads(src.read_text())
        module, _, name = spec["job"].partition(":")
        job: Any = from_dict(getattr(importlib.import_module(module), name), spec["payload"])
        dst.write_text(json.dumps({"result": to_dict(job.run())}))
    except BaseException as e:  # the parent decides what a failure means; report every kind
        dst.write_text(json.dumps({"error": _one_line(e), "traceback": traceback.format_exc()}))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
