"""The engine in one worker thread, fed by the scheduler: what the HTTP server runs requests through.

Other threads (the asyncio event loop) call `submit`, `cancel`, `close` and `snapshot`; they are
thread-safe. The worker thread alone calls the engine and the sinks. Batching is per request group, or
continuous where the scheduler says so, as in the open-loop runner (`autoopt.serving.batcher`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Protocol

from autoopt.engines.base import Engine
from autoopt.serving.batcher import ContinuousBatch, RowFailed, run_batch
from autoopt.serving.engine_thread import EngineThread
from autoopt.serving.scheduler import REJECTED, Scheduler, ServingRequest

log = logging.getLogger("autoopt")


class RequestSink(Protocol):
    """Where one request's tokens go. Called on the worker thread only."""

    def started(self, t: float) -> None:
        """Its batch started at `t`."""

    def token(self, index: int, token: int, t: float) -> bool:
        """Token `index` (0 = first) arrived at `t`; return False to stop tracking this row."""

    def finished(self, error: BaseException | None) -> None:
        """The row is no longer tracked (last token, stopped, or the engine failed). Called once."""


class WorkerClosed(RuntimeError):
    """The worker is shutting down and takes no new requests."""


@dataclass(frozen=True)
class WorkerState:
    depth: dict[str, int]  # waiting + held per class
    active_rows: int  # rows of the running batch still tracked
    closing: bool


class ServingWorker:
    """Runs batches released by `scheduler` on `engine`, one at a time, in a daemon thread."""

    def __init__(
        self,
        engine: Engine,
        scheduler: Scheduler,
        *,
        clock: Callable[[], float] = time.perf_counter,
        # after each batch (continuous: each step, with the joiners' prefills before it): its rows and its seconds
        on_batch: Callable[[int, float], None] | None = None,
        prefill_chunk: int = 0,  # continuous batching: prefill joiners at most this many tokens a step (0: whole)
        # the thread that loaded and warmed up the engine, to run the loop on (`autoopt.serving.engine_thread`);
        # None: a daemon thread of its own
        engine_thread: EngineThread | None = None,
    ) -> None:
        self._engine, self._scheduler, self._clock = engine, scheduler, clock
        self._on_batch, self._prefill_chunk = on_batch, prefill_chunk
        self._cond = threading.Condition()
        self._sinks: dict[int, RequestSink] = {}
        self._gone: set[int] = set()  # continuous batching: running requests cancelled since the last step
        self._active = 0
        self._closing = False
        self._engine_thread = engine_thread
        self._thread = None if engine_thread else threading.Thread(target=self._loop, name="autoopt-engine", daemon=True)
        self._done: Future[None] | None = None

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def start(self) -> None:
        if self._engine_thread is not None:
            self._done = self._engine_thread.submit(self._loop)
            self._done.add_done_callback(_report_crash)
        else:
            assert self._thread is not None
            self._thread.start()

    def submit(self, request: ServingRequest, sink: RequestSink) -> str:
        """Queue `request` (QUEUED, DELAYED or REJECTED, see `Scheduler.submit`); raises WorkerClosed."""
        with self._cond:
            if self._closing:
                raise WorkerClosed("the server is shutting down")
            outcome = self._scheduler.submit(request)
            if outcome != REJECTED:
                self._sinks[request.id] = sink
                self._cond.notify()
            return outcome

    def cancel(self, request_id: int) -> bool:
        """Drop a request that still waits (True). A running row of a group batch is stopped by its sink returning
        False; one of a continuous batch leaves it at the worker's next pass between steps, mid-prefill too (a step
        already under way still carries it)."""
        with self._cond:
            removed = self._scheduler.cancel(request_id)
            if removed:
                self._sinks.pop(request_id, None)
                self._cond.notify()
            elif self._scheduler.continuous:
                self._gone.add(request_id)
            return removed

    def snapshot(self) -> WorkerState:
        with self._cond:
            return WorkerState(self._scheduler.depth(), self._active, self._closing)

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking requests, finish every admitted one, then end the thread. True if it ended."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._done is not None:
            wait([self._done], timeout)
            return self._done.done() and self._done.exception() is None
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _next(self) -> tuple[list[ServingRequest], list[RequestSink]] | None:
        with self._cond:
            while True:
                now = self._clock()
                batch = self._scheduler.next_batch(now)
                if batch:
                    self._active = len(batch)
                    return batch, [self._sinks.pop(r.id) for r in batch]
                if self._closing and len(self._scheduler) == 0:
                    return None
                release = self._scheduler.next_release(now)
                self._cond.wait(None if release is None else max(0.0, release - now))

    def _loop(self) -> None:
        if self._scheduler.continuous:
            self._loop_continuous()
            return
        while (work := self._next()) is not None:
            self._run(*work)

    def _loop_continuous(self) -> None:
        sinks: dict[int, RequestSink] = {}  # rows still tracked

        def on_token(request: ServingRequest, index: int, token: int, t: float) -> bool:
            keep = sinks[request.id].token(index, token, t)
            if not keep or index + 1 >= request.max_new_tokens:
                sinks.pop(request.id).finished(None)
            return keep

        def on_start(request: ServingRequest, t: float) -> None:  # its queue time ends at its own prefill
            sinks[request.id].started(t)

        def new_stream() -> ContinuousBatch:
            return ContinuousBatch(self._engine, self._scheduler.max_batch, self._clock, on_token, on_start=on_start,
                                   prefill_chunk=self._prefill_chunk, urgency=self._scheduler.urgency)

        stream = new_stream()
        while (joining := self._joining(stream, sinks)) is not None:
            start = self._clock()
            for request in joining:
                try:  # a failed prefill leaves the stream as it was: only this request gets the error
                    stream.join([request])
                except Exception as e:
                    if request.id in sinks:
                        sinks.pop(request.id).finished(e)
            with self._cond:
                gone, self._gone = self._gone, set()
            for request_id in gone:  # ids no longer tracked (finished meanwhile) are not in the stream either
                if request_id in sinks and stream.drop(request_id):
                    sinks.pop(request_id).finished(None)
            rows = 0
            try:
                rows = stream.step() if stream.rows else 0
            except RowFailed as e:  # a part of a joiner's prefill: only that request gets the error
                if e.request.id in sinks:
                    sinks.pop(e.request.id).finished(e.cause)
            except Exception as e:  # reported to every row of the stream; the server keeps serving with a new one
                for request_id in list(sinks):
                    sinks.pop(request_id).finished(e)
                stream = new_stream()
            if self._on_batch is not None:  # rows 0: only prefills ran (no row was decoding, or all left)
                self._on_batch(rows, self._clock() - start)
            with self._cond:
                self._active = stream.rows

    def _joining(self, stream: ContinuousBatch, sinks: dict[int, RequestSink]) -> list[ServingRequest] | None:
        """The requests to join `stream` now ([] while it runs and none is due; it waits while the stream is
        empty), their sinks moved into `sinks`; None once closing and nothing is left."""
        with self._cond:
            while True:
                now = self._clock()
                batch = self._scheduler.next_batch(now, stream.room) if stream.room else None
                if batch:
                    sinks.update((r.id, self._sinks.pop(r.id)) for r in batch)
                    self._active = stream.rows + len(batch)
                    return batch
                if stream.rows:
                    return []
                if self._closing and len(self._scheduler) == 0:
                    return None
                release = self._scheduler.next_release(now, stream.room)
                self._cond.wait(None if release is None else max(0.0, release - now))

    def _run(self, batch: list[ServingRequest], sinks: list[RequestSink]) -> None:
        by_id = {r.id: s for r, s in zip(batch, sinks, strict=True)}
        open_rows = set(by_id)

        def on_token(request: ServingRequest, index: int, token: int, t: float) -> bool:
            keep = by_id[request.id].token(index, token, t)
            if not keep or index + 1 >= request.max_new_tokens:
                self._finish(open_rows, request.id, by_id[request.id], None)
                return False
            return True

        start = self._clock()
        for sink in sinks:
            sink.started(start)
        error: BaseException | None = None
        try:
            run_batch(self._engine, batch, self._clock, on_token)
        except Exception as e:  # reported to every waiting client; the server keeps serving
            error = e
        if self._on_batch is not None:
            self._on_batch(len(batch), self._clock() - start)
        for request_id in list(open_rows):
            self._finish(open_rows, request_id, by_id[request_id], error)
        with self._cond:
            self._active = 0

    def _finish(self, open_rows: set[int], request_id: int, sink: RequestSink, error: BaseException | None) -> None:
        open_rows.discard(request_id)
        with self._cond:
            self._active = len(open_rows)
        sink.finished(error)


def _report_crash(done: Future[None]) -> None:
    """The worker's loop ended with an exception (on an engine thread nothing else would say so)."""
    if not done.cancelled() and (error := done.exception()) is not None:
        log.error("the serving worker's loop failed; requests it held are left unanswered", exc_info=error)
