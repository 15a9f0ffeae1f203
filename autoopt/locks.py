"""Exclusive file locks for work that concurrent processes must do once: cache entries, shared SQLite stores."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) until the block ends; other processes
    asking for it wait."""
    with Path(path).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_beside(path: Path) -> Path:
    """The lock file guarding `path`: a hidden file next to it."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Held while a process opens (and perhaps creates) the SQLite database behind `uri`: MLflow and Optuna create
    and migrate a new store's schema, and create experiments or studies, with no guard against another process
    doing the same (two sweeps started together in one workspace), and the later one crashes on what the first
    created. Other URIs are servers, which guard themselves: no lock; nor where the database's folder is missing,
    since opening it then fails anyway, with the store's own error."""
    db = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if not uri.startswith("sqlite:///") or not db.parent.is_dir():
        yield
        return
    with exclusive_lock(lock_beside(db)):
        yield
