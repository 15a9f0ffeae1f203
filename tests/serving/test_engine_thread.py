"""One thread for all of an engine's work (`autoopt.serving.engine_thread`), and the server's worker running on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from autoopt.engines.base import Engine
from autoopt.serving.engine_thread import EngineThread
from autoopt.serving.scheduler import Scheduler, ServingRequest
from autoopt.serving.worker import ServingWorker
from tests.serving.test_runner import CLASSES


def test_every_callable_runs_on_the_one_daemon_thread_in_order_with_its_outcome() -> None:
    engine = EngineThread()
    seen: list[tuple[int, int]] = []
    futures = [engine.submit(lambda k=k: seen.append((k, threading.get_ident())) or k) for k in range(5)]
    assert [f.result(timeout=10) for f in futures] == list(range(5))
    assert [k for k, _ in seen] == list(range(5)) and {ident for _, ident in seen} == {engine.ident}
    assert engine.ident != threading.get_ident() and engine._thread.daemon  # a second signal does not wait for it

    def fails() -> None:
        raise ValueError("no model here")

    with pytest.raises(ValueError, match="no model here"):
        engine.run(fails)
    assert engine.run(lambda: 7) == 7  # a failure leaves the thread serving


class ThreadRecordingEngine(Engine):
    """Two tokens per row, noting the thread each call ran on."""

    name = "thread-recording"

    def __init__(self) -> None:
        self.threads: set[int] = set()

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        for _ in range(max_new_tokens):
            self.threads.add(threading.get_ident())
            yield np.zeros(input_ids.shape[0], dtype=np.int64)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        raise NotImplementedError


class Sink:
    def __init__(self) -> None:
        self.done = threading.Event()

    def started(self, t: float) -> None:
        pass

    def token(self, index: int, token: int, t: float) -> bool:
        return True

    def finished(self, error: BaseException | None) -> None:
        self.done.set()


def test_the_servers_worker_runs_the_engine_on_the_thread_that_loaded_it() -> None:
    thread = EngineThread()
    engine = thread.run(ThreadRecordingEngine)  # "loaded" there
    worker = ServingWorker(engine, Scheduler(CLASSES, max_batch=2), engine_thread=thread)
    worker.start()
    sinks = [Sink() for _ in range(3)]
    for k, sink in enumerate(sinks):
        worker.submit(ServingRequest(k, "P0", 4, 2, 0.0, np.arange(4)), sink)
    assert all(sink.done.wait(10) for sink in sinks)
    assert worker.close(10)
    assert engine.threads == {thread.ident}
    assert thread.run(lambda: "free again") == "free again"  # the loop ended with the worker
