"""What a long job is doing now, for whoever watches: the sweep's live line shows the step a trial's build or
measurement is at (loading, timing, each capacity probe, accuracy) while it runs, not only when it ends.

`say` tells the listener that `listening` set in this process. A job in a child process
(`autoopt.jobs.launch.SubprocessLauncher`) has none of its own: it appends each step as one line to the file its
launcher names in its environment, and the launcher hands each new line to the listener of the process that
launched it (`Follower`). Nobody listening: `say` does nothing."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

Listener = Callable[[str], None]
CHILD_ENV = "AUTOOPT_PROGRESS_FILE"  # in a child's environment when its launcher follows its steps: where they go

_listener: Listener | None = None


def say(step: str) -> None:
    """Tell whoever watches that the work is now at `step` (a few words, one line)."""
    if _listener is not None:
        _listener(step)
    elif path := os.environ.get(CHILD_ENV):
        with suppress(OSError), open(path, "a", encoding="utf-8") as f:  # a step lost is no failure of the job
            f.write(step.replace("\n", " ") + "\n")


def listener() -> Listener | None:
    """The listener `listening` set in this process, if any."""
    return _listener


@contextmanager
def listening(to: Listener) -> Iterator[None]:
    """`to` hears every step said meanwhile, in this process or in the jobs it launches."""
    global _listener
    before, _listener = _listener, to
    try:
        yield
    finally:
        _listener = before


class Follower:
    """Hands each line appended to `path` to `heard`, from a thread of its own, until `stop`: a job's steps, read
    apart from its pipes so that the launcher's reading of those (and its timeout) stays as it was."""

    POLL_S = 0.2

    def __init__(self, path: Path, heard: Listener) -> None:
        self._path, self._heard = path, heard
        self._offset, self._tail = 0, ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoopt-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following, after the lines written so far are handed on."""
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.POLL_S):
            self._read()
        self._read()

    def _read(self) -> None:
        try:
            with open(self._path, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                text = f.read()
                self._offset = f.tell()
        except OSError:  # not written yet
            return
        *lines, self._tail = (self._tail + text).split("\n")
        for line in lines:
            with suppress(Exception):  # a live line that fails must not stop the following
                self._heard(line)
