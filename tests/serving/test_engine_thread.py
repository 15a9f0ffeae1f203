"""One thread for all of an engine's work (`autoopt.serving.engine_thread`), and the server's worker running on it."""

from __future__ import annotations

import threading
import time
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
    assert engine.run(lambda: engine.run(lambda: 8)) == 8  # from the thread itself: at once, no deadlock


def test_it_is_busy_while_anything_given_to_it_runs_or_waits() -> None:
    engine = EngineThread()
    release = threading.Event()
    assert not engine.busy
    first, second = engine.submit(release.wait), engine.submit(lambda: None)
    assert engine.busy
    release.set()
    first.result(timeout=10), second.result(timeout=10)
    assert engine.run(lambda: None) is None and not engine.busy


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


def test_a_worker_loop_that_fails_on_the_engine_thread_says_so_and_is_not_drained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def failing(rows: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    thread = EngineThread()
    worker = ServingWorker(ThreadRecordingEngine(), Scheduler(CLASSES, max_batch=2), engine_thread=thread,
                           on_batch=failing)
    worker.start()
    worker.submit(ServingRequest(0, "P0", 4, 2, 0.0, np.arange(4)), Sink())
    assert not worker.close(10)
    for _ in range(100):  # the future's callbacks run just after its waiters wake
        if "the serving worker's loop failed" in caplog.text:
            break
        time.sleep(0.05)
    assert "the serving worker's loop failed" in caplog.text and "metrics broke" in caplog.text


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
