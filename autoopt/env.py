"""An environment fingerprint: enough to tell whether two measurements are comparable."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import autoopt

LIBRARIES = (
    "torch", "transformers", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai",
    "onnxruntime-genai-cuda", "onnxscript", "tensorrt", "optuna", "mlflow", "hydra-core",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def console_script(name: str) -> str:
    """`name` as a command the user can paste: the copy beside this interpreter (a venv's bin/, often not on
    PATH) when there is one."""
    beside = Path(sys.executable).with_name(name)
    return shlex.quote(str(beside)) if beside.exists() else name


def git_commit() -> str | None:
    root = Path(autoopt.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that change what autoopt builds and measures."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint() -> dict[str, object]:
    return {
        "autoopt": autoopt.__version__,
        "git_commit": git_commit(),
        "cpu": cpu_model(),
        "cores_available": len(os.sched_getaffinity(0)),
        "cores_total": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
