"""A non-streamed request whose handler is cancelled (uvicorn's forced exit cancels every task) withdraws its
request from the worker, as a client's disconnect does: nobody will read its reply."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from autoopt.serve.app import _complete, _Meta, _Reply


class Worker:
    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def cancel(self, request_id: int) -> bool:
        self.cancelled.append(request_id)
        return True


class Connected:
    async def receive(self) -> dict[str, str]:
        await asyncio.Event().wait()  # the client never goes
        raise AssertionError


def test_a_cancelled_handler_withdraws_its_request() -> None:
    async def run() -> tuple[Worker, _Reply]:
        worker = Worker()
        server = SimpleNamespace(worker=worker, metrics=SimpleNamespace(record=lambda *a: None),
                                 model=SimpleNamespace(tokenizer=None))
        reply = _Reply(asyncio.get_running_loop(), frozenset(), 0.0)
        item = SimpleNamespace(id=7, cls="P0")
        meta = _Meta(server, Connected(), item, reply, False, 3, [], False)  # type: ignore[arg-type]
        handler = asyncio.ensure_future(_complete(meta))
        await asyncio.sleep(0.01)  # waiting for its first token
        handler.cancel()
        await asyncio.gather(handler, return_exceptions=True)
        return worker, reply

    worker, reply = asyncio.run(run())

    assert worker.cancelled == [7] and reply.cancelled
