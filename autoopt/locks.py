"""File locks: exclusive ones for work that concurrent processes must do once (cache entries, shared SQLite
stores), and claims on temporary folders that outlive a process killed before it could remove them."""

from __future__ import annotations

import fcntl
import glob
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


_CLAIM = ".claimed"
UNCLAIMED_AFTER_S = 600.0


class ClaimedFolder:
    """A new temporary folder `<parent>/<prefix>XXXXXXXX`, with a lock held on a file inside it while this object
    lives. A process killed outright (SIGKILL, the OOM killer) cannot remove its folders, so each new one first
    removes the folders of its prefix that no living process holds (`remove_abandoned`)."""

    def __init__(self, parent: Path, prefix: str):
        remove_abandoned(Path(parent), prefix)
        self._folder = tempfile.TemporaryDirectory(prefix=prefix, dir=parent)  # removed at exit if never cleaned up
        self.path = Path(self._folder.name)
        self._claim = _claim(self.path)

    def cleanup(self) -> None:
        self._claim.close()
        self._folder.cleanup()


def _claim(folder: Path) -> IO[str]:
    # Locked before it takes its name, so that no other process ever finds the claim file unlocked while we live.
    pending = folder / f"{_CLAIM}.new"
    handle = pending.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    pending.rename(folder / _CLAIM)
    return handle


def remove_abandoned(parent: Path, prefix: str, unclaimed_after_s: float = UNCLAIMED_AFTER_S) -> None:
    """Remove each folder `<parent>/<prefix>*` whose claim no process holds. One without a claim file is being
    set up right now, or was made by an autoopt that did not claim its folders: removed once `unclaimed_after_s`
    old (a long-lived process of such an autoopt, a server say, keeps running on its open files). One this process
    may not read (another user's, in a shared /tmp) is left alone."""
    for folder in parent.glob(f"{glob.escape(prefix)}*"):
        try:
            with (folder / _CLAIM).open() as claim:
                try:
                    fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # no claim, or another process removed the folder meanwhile
            try:
                unclaimed = time.time() - folder.stat().st_mtime > unclaimed_after_s
            except FileNotFoundError:
                continue
            if unclaimed and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        except (NotADirectoryError, PermissionError):
            continue
