"""A model folder built once under the cache: built in a staging folder, renamed into place under a lock."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import tokenizers
import torch
import transformers

from autoopt.locks import exclusive_lock


def build_versions() -> dict[str, str]:
    """The libraries whose versions decide what a deterministic model build produces: torch's random streams
    and kernels, transformers' module init, tokenizers' BPE trainer. Part of every built model's cache key."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def ensure_folder(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, calling `build(staging)` to fill it on first use. Concurrent callers wait on a lock file beside
    it and the first one builds; a failed build leaves nothing behind, so the next call starts over."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        if not folder.is_dir():  # another process may have finished while we waited
            _build_atomically(folder, build)
    return folder


def _build_atomically(folder: Path, build: Callable[[Path], None]) -> None:
    # One staging name, under the lock: what a builder killed outright left there is removed by the next.
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        build(staging)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
