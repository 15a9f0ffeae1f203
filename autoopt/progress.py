"""What a long job is doing now, for whoever watches: the sweep's live line shows the step a trial's build or
measurement is at (loading, timing, each capacity probe, accuracy) while it runs, not only when it ends.

`say` tells the listener that `listening` set in this process. A job in a child process
(`autoopt.jobs.launch.SubprocessLauncher`) has none of its own: it writes each step as one line on its stderr,
which the launcher reads as it comes and hands to the listener of the process that launched it. Nobody listening:
`say` does nothing."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str], None]
LINE_PREFIX = "\x1eautoopt-progress: "  # starts a step's line on a child's stderr (\x1e: no log line starts so)
CHILD_ENV = "AUTOOPT_PROGRESS_LINES"  # "1" in a child's environment when its launcher reads its steps

_listener: Listener | None = None


def say(step: str) -> None:
    """Tell whoever watches that the work is now at `step` (a few words)."""
    if _listener is not None:
        _listener(step)
    elif os.environ.get(CHILD_ENV) == "1":
        print(LINE_PREFIX + step, file=sys.stderr, flush=True)


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


def said(line: str) -> str | None:
    """The step a line of a child's stderr tells, or None where it is any other line."""
    return line[len(LINE_PREFIX) :].rstrip("\n") if line.startswith(LINE_PREFIX) else None
