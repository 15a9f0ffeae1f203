"""Run one job in a fresh Python process, so that its memory, threads and crashes stay its own.

A job is a function `f(payload: dict) -> dict` named by "module:function". The child writes either
the returned dict or the traceback; the parent gets the dict or a `JobFailed` carrying the reason.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


class JobFailed(RuntimeError):
    """The child raised, crashed or timed out. `reason` is one line; `detail` the traceback/log tail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# glibc returns freed memory to the kernel eagerly by default; large tensors then cost page faults on
# every step, and half the CPU time can go to the kernel (measured on this kind of machine).
_CHILD_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def run_job(function: str, payload: dict[str, Any], timeout_s: float, threads: int | None = None) -> dict[str, Any]:
    env = {**os.environ, **_CHILD_ENV}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="autoopt-job-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(payload, default=str))
        cmd = [sys.executable, "-m", "autoopt.isolation", function, str(src), str(dst)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise JobFailed(f"{function} timed out after {timeout_s:.0f}s") from None
        if dst.exists():
            out = json.loads(dst.read_text())
            if "error" in out:
                raise JobFailed(out["error"], out["traceback"])
            return out["result"]
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise JobFailed(f"{function} died with exit code {proc.returncode} and no result", tail)


def _child(function: str, src: Path, dst: Path) -> None:
    module, _, name = function.partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(json.loads(src.read_text()))
        dst.write_text(json.dumps({"result": result}, default=str))
    except BaseException as e:  # the parent decides what a failure means; report every kind
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        dst.write_text(json.dumps({"error": line, "traceback": traceback.format_exc()}))


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
