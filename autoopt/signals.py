"""Stopping a long command (`python -m autoopt`, `python -m autoopt.serve`) by a signal through Python, so that the
stack unwinds: the sweep records its trial in flight as interrupted, the server closes its engine. Standard library
only: `autoopt.serve` installs it before it imports the server (a `--prompt` run never does)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Stopped(Exception):
    """A signal asked the process to stop (raised by the handlers `stopping_on_signals` installs). `cut_off`: why
    the server stopped with requests in flight unanswered (a second signal, the HTTP server's wait for them or the
    worker's drain timed out), or ""."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.cut_off = ""


_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed; jobs have their own session


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` inside the block, wherever the main thread is (loading a bundle, waiting for
    a trial's job), so the stack unwinds: SIGTERM's default action would end the process first (ort_genai's staged
    folder beside a bundle's model would stay behind, a sweep's trial would stay RUNNING in the study), and SIGINT's
    prints a traceback."""
    previous = {sig: signal.signal(sig, _stop) for sig in _STOPPING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then act as the handlers outside it say): for cleanup that a
    second signal must not cut short. Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in _STOPPING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught[:1]:
            signal.raise_signal(signum)
