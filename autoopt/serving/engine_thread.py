"""One thread for all of an engine's work: load, warm-up and serving.

torch on the CPU runs its parallel regions through OpenMP. Once the process's main thread has run one (loading or
warming up a model does), a region started from another thread pays for waking a team of its own every time: on
the 2-core AMD EPYC VM a step of small ops took about 10x as long, and the served bundle lost half its capacity
(`experiments/2026-11-29-http-load.md`). A process that serves from a worker thread therefore loads and warms up
its engine on that same thread, and never touches it from another.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EngineThread:
    """A daemon thread running the callables given to it one at a time, in order (a daemon, like the server's worker
    thread it hosts: a second signal ends the process without waiting for it)."""

    def __init__(self, name: str = "autoopt-engine") -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._unfinished = 0  # given and not yet done
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    @property
    def busy(self) -> bool:
        """Whether something given to it has not finished (a process must not tear torch down under it)."""
        with self._lock:
            return self._unfinished > 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the thread after what was given before; its outcome in the returned future."""
        done: Future[T] = Future()
        with self._lock:
            self._unfinished += 1
        self._work.put((fn, done))
        return done

    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the thread and return what it returns (or raise what it raised); called from the thread
        itself, at once."""
        if threading.get_ident() == self.ident:
            return fn()
        return self.submit(fn).result()

    def _serve(self) -> None:
        while True:
            fn, done = self._work.get()
            try:
                if done.set_running_or_notify_cancel():
                    try:
                        result = fn()
                    except BaseException as e:  # handed to the caller, whatever it was
                        done.set_exception(e)
                    else:
                        done.set_result(result)
            finally:
                with self._lock:
                    self._unfinished -= 1
