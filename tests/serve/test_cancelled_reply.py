"""How a reply's end is counted. A handler that the server cancels (uvicorn's graceful wait ran out, or a second
signal: asyncio.run then cancels every task) withdraws its request from the worker, as a client's disconnect does,
since nobody will read its reply; it is counted as cut off by the shutdown, not as a disconnect. A reply a stop
string ends, ends at the token that completed it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from autoopt.config.serving import ServingClassConfig
from autoopt.serve.app import _Choices, _complete, _Meta, _stream
from autoopt.serve.metrics import Metrics
from autoopt.serve.reply import Reply

P0 = ServingClassConfig("P0", 0, 200.0)


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


async def _read_whole(meta: _Meta) -> None:
    await _complete(_Choices((meta,)))


async def _read_stream(meta: _Meta) -> None:
    async for _ in _stream(_Choices((meta,))):
        pass


@pytest.mark.parametrize("handle", [_read_whole, _read_stream], ids=["plain", "streamed"])
@pytest.mark.parametrize("shutting_down", [True, False], ids=["in-shutdown", "before-shutdown"])
def test_a_cancelled_handler_withdraws_its_request_and_counts_it_cut_off_in_a_shutdown(
    handle: Callable[[_Meta], Coroutine[Any, Any, object]], shutting_down: bool
) -> None:
    async def run() -> tuple[SimpleNamespace, Reply]:
        model = SimpleNamespace(tokenizer=None, model_name="m")
        server = SimpleNamespace(worker=Worker(), metrics=Metrics([P0]), model=model, cancelled_in_shutdown=0,
                                 shutting_down=shutting_down)
        reply = Reply(asyncio.get_running_loop(), frozenset(), 0.0)
        item = SimpleNamespace(id=7, cls="P0")
        meta = _Meta(server, Connected(), item, reply, False, 3, [], False)  # type: ignore[arg-type]
        handler = asyncio.ensure_future(handle(meta))
        await asyncio.sleep(0.01)  # waiting for its first token
        handler.cancel()
        await asyncio.gather(handler, return_exceptions=True)
        return server, reply

    server, reply = asyncio.run(run())

    assert server.worker.cancelled == [7] and reply.cancelled
    sample = server.metrics.registry.get_sample_value
    counted = "shutdown" if shutting_down else "disconnected"  # outside a shutdown only a client cancels
    assert server.cancelled_in_shutdown == (1 if shutting_down else 0)
    assert sample("autoopt_requests_total", {"cls": "P0", "outcome": counted}) == 1
    assert sample("autoopt_requests_total", {"cls": "P0", "outcome": "ok"}) is None
    missed = sample("autoopt_requests_slo_total", {"cls": "P0", "verdict": "missed"})
    assert missed == (1 if shutting_down else 0)  # a client that left is not judged


def test_a_streamed_reply_generated_whole_and_closed_before_its_last_chunks_counts_as_ok() -> None:
    async def run() -> SimpleNamespace:
        model = SimpleNamespace(tokenizer=Letters(), model_name="m")
        server = SimpleNamespace(worker=Worker(), metrics=Metrics([P0]), model=model, cancelled_in_shutdown=0,
                                 shutting_down=True)
        reply = Reply(asyncio.get_running_loop(), frozenset(), 0.0)
        item = SimpleNamespace(id=7, cls="P0")
        meta = _Meta(server, Connected(), item, reply, False, 3, [], False)  # type: ignore[arg-type]
        reply.token(0, 0, 1.0)
        reply.finished(None)
        chunks = _stream(_Choices((meta,)))
        while "finish_reason" not in (chunk := await chunks.__anext__()) or '"finish_reason": null' in chunk:
            pass
        await chunks.aclose()  # the shutdown lands while the last chunks wait for a slow reader
        return server

    server = asyncio.run(run())

    sample = server.metrics.registry.get_sample_value
    assert sample("autoopt_requests_total", {"cls": "P0", "outcome": "ok"}) == 1 and server.cancelled_in_shutdown == 0


class Letters:
    """Token i is the letter chr(97 + i)."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i) for i in ids)


def test_a_reply_cut_by_a_stop_string_ends_when_its_stop_token_was_generated() -> None:
    """The row generates on until it sees the reply stopped: tokens after the stop string are nobody's wait."""

    async def run() -> Metrics:
        model = SimpleNamespace(tokenizer=Letters(), model_name="m")
        server = SimpleNamespace(worker=Worker(), metrics=Metrics([P0]), model=model, cancelled_in_shutdown=0)
        reply = Reply(asyncio.get_running_loop(), frozenset(), 0.0)
        item = SimpleNamespace(id=7, cls="P0")
        meta = _Meta(server, Connected(), item, reply, False, 3, ["bc"], False)  # type: ignore[arg-type]
        for index, (token, t) in enumerate([(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0), (4, 5.0)]):  # "abcde"
            reply.token(index, token, t)  # the worker runs ahead of the handler
        response = await _complete(_Choices((meta,)))
        assert b'"text":"a"' in response.body and reply.finish_reason == "stop"
        return server.metrics

    sample = asyncio.run(run()).registry.get_sample_value

    assert sample("autoopt_request_e2e_seconds_sum", {"cls": "P0"}) == 3.0  # "c" completed the stop string
    assert sample("autoopt_request_ttft_seconds_sum", {"cls": "P0"}) == 1.0
