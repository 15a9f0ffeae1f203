"""`n`: several choices per request, each a row of its own, through the HTTP server on loopback (the tiny untrained
model on the torch engine, `tests/serve/conftest.py`)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.serve.app import ServedModel, create_app
from autoopt.serve.protocol import MAX_CHOICES
from autoopt.serve.server import ServerThread
from tests.serve.helpers import MAX_LENGTH, PROMPT, PacedStreams, active_rows, paced_server, wait_until

CHAT = [{"role": "user", "content": "hi"}]


def _post(url: str, body: dict[str, Any], path: str = "/v1/completions") -> dict[str, Any]:
    r = httpx.post(url + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _events(url: str, body: dict[str, Any], path: str = "/v1/completions") -> list[Any]:
    """A streamed reply's events, parsed ("[DONE]" kept as a string)."""
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=30) as r:
        data = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def _texts(reply: dict[str, Any]) -> list[str]:
    return [c["message"]["content"] if "message" in c else c["text"] for c in reply["choices"]]


def _count(app: FastAPI, name: str, labels: dict[str, str]) -> float:
    return app.state.server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_sampled_choices_under_a_seed_are_the_single_requests_with_seed_plus_their_index(
    server: ServerThread,
) -> None:
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "top_p": 0.95}
    ok = {"cls": "P3", "outcome": "ok"}
    before = _count(server.server.config.app, "autoopt_requests_total", ok)  # type: ignore[attr-defined]

    reply = _post(server.url, {**body, "seed": 5, "n": 3})

    alone = [_post(server.url, {**body, "seed": 5 + i}) for i in range(3)]
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert _texts(reply) == [_texts(a)[0] for a in alone] and len(set(_texts(reply))) > 1
    assert [c["finish_reason"] for c in reply["choices"]] == [a["choices"][0]["finish_reason"] for a in alone]
    assert reply["usage"]["prompt_tokens"] == alone[0]["usage"]["prompt_tokens"]
    assert reply["usage"]["completion_tokens"] == sum(a["usage"]["completion_tokens"] for a in alone)
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    # each choice is a request on /metrics: 3 for the one with n=3, then the 3 single ones
    assert _count(server.server.config.app, "autoopt_requests_total", ok) - before == 6  # type: ignore[attr-defined]


def test_greedy_choices_are_alike(server: ServerThread) -> None:
    alone = _post(server.url, {"messages": CHAT, "max_tokens": 6}, "/v1/chat/completions")
    reply = _post(server.url, {"messages": CHAT, "max_tokens": 6, "n": 2}, "/v1/chat/completions")
    assert reply["object"] == "chat.completion" and [c["index"] for c in reply["choices"]] == [0, 1]
    assert _texts(reply) == _texts(alone) * 2
    assert all(c["message"]["role"] == "assistant" for c in reply["choices"])
    assert reply["usage"]["completion_tokens"] == 2 * alone["usage"]["completion_tokens"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streamed_choices_carry_their_index_and_end_once_each(server: ServerThread, path: str) -> None:
    ask = {"prompt": PROMPT} if path == "/v1/completions" else {"messages": CHAT}
    body = {**ask, "max_tokens": 10, "temperature": 1.0, "seed": 11, "n": 2}
    whole = _post(server.url, body, path)

    *chunks, usage, done = _events(server.url, {**body, "stream_options": {"include_usage": True}}, path)

    assert done == "[DONE]" and usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert all(len(c["choices"]) == 1 and c.get("usage") is None and c["id"] == chunks[0]["id"] for c in chunks)
    parts = [c["choices"][0] for c in chunks]
    if path == "/v1/chat/completions":
        assert [p["delta"] for p in parts[:2]] == [{"role": "assistant", "content": ""}] * 2  # one per choice, first
        assert [p["index"] for p in parts[:2]] == [0, 1]
        streamed = ["".join(p["delta"].get("content", "") for p in parts if p["index"] == i) for i in (0, 1)]
    else:
        streamed = ["".join(p["text"] for p in parts if p["index"] == i) for i in (0, 1)]
    assert streamed == _texts(whole)
    ends = [(p["index"], p["finish_reason"]) for p in parts if p["finish_reason"] is not None]
    assert sorted(ends) == [(c["index"], c["finish_reason"]) for c in whole["choices"]]


@pytest.mark.parametrize("n", [0, -1, MAX_CHOICES + 1])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_n_out_of_range_is_refused(server: ServerThread, n: int, path: str) -> None:
    r = httpx.post(server.url + path, json={"prompt": "x", "messages": CHAT, "n": n}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_n"
    assert f"n={n}" in r.json()["error"]["message"]


def test_the_most_choices_are_served(server: ServerThread) -> None:
    reply = _post(server.url, {"prompt": PROMPT, "max_tokens": 2, "n": MAX_CHOICES})
    assert [c["index"] for c in reply["choices"]] == list(range(MAX_CHOICES))
    assert reply["usage"]["completion_tokens"] == 2 * MAX_CHOICES


def test_more_choices_than_a_rejecting_class_lets_wait_are_refused_up_front(served: ServedModel) -> None:
    """Its own choices would fill the queue: a 429 that no retry clears. A class that holds back its overflow
    (on_full=delay) serves them."""
    classes = [ServingClassConfig("P0", 0, 200.0, 0.5, 2, "reject"), ServingClassConfig("P3", 3, 0.0, 0.5, 2, "delay")]
    app = create_app(ServedModel(served.engine, served.tokenizer, "tiny", MAX_LENGTH), ServingConfig(classes=classes))
    body = {"prompt": PROMPT, "max_tokens": 2, "n": 3}
    with ServerThread(app) as running:
        refused = httpx.post(running.url + "/v1/completions", json={**body, "priority": 0}, timeout=30)
        held = httpx.post(running.url + "/v1/completions", json={**body, "priority": 3}, timeout=30)
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "invalid_n" and "class P0's queue of 2" in error["message"]
    assert held.status_code == 200 and [c["index"] for c in held.json()["choices"]] == [0, 1, 2]


def test_a_refused_choice_withdraws_the_choices_queued_before_it(served: ServedModel) -> None:
    """One row runs and one waits in a class that lets two wait: the first of two choices is queued, the second is
    refused, and the first is withdrawn with it."""
    classes = [ServingClassConfig("P0", 0, 200.0, 1.0, 2, "reject")]
    running, engine = paced_server(served, 0.02, classes)
    app = running.server.config.app  # type: ignore[attr-defined]
    body = {"prompt": PROMPT, "max_tokens": 40}
    try:
        callers = [threading.Thread(target=_post, args=(running.url, body)) for _ in range(2)]
        callers[0].start()
        wait_until(lambda: active_rows(running.url) == 1)
        callers[1].start()
        wait_until(lambda: app.state.server.worker.snapshot().depth["P0"] == 1)

        r = httpx.post(running.url + "/v1/completions", json={**body, "n": 2}, timeout=30)

        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert app.state.server.worker.snapshot().depth["P0"] == 1  # only the second caller's row waits
        for caller in callers:
            caller.join(30)
    finally:
        running.stop()
    assert engine.steps == 80  # the two callers' rows: the withdrawn choice never ran
    assert _count(app, "autoopt_rejections_total", {"cls": "P0"}) == 2  # one per choice refused
    assert _count(app, "autoopt_requests_total", {"cls": "P0", "outcome": "ok"}) == 2


def test_a_client_that_gives_up_withdraws_every_choice(served: ServedModel) -> None:
    running, engine = paced_server(served, 0.02, [ServingClassConfig("P0", 0, 200.0, 1.0, 4, "reject")])
    app = running.server.config.app  # type: ignore[attr-defined]
    try:
        with pytest.raises(httpx.ReadTimeout):  # one row runs (max_batch 1), the other waits
            httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 200, "n": 2},
                       timeout=0.5)
        wait_until(lambda: active_rows(running.url) == 0 and app.state.server.worker.snapshot().depth["P0"] == 0)
        wait_until(lambda: _count(app, "autoopt_requests_total", {"cls": "P0", "outcome": "disconnected"}) == 2)
        assert engine.steps < 150
    finally:
        running.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_failed_step_fails_the_request_once_and_counts_each_choice(served: ServedModel, stream: bool) -> None:
    engine = PacedStreams(served.engine, 0.01, fail_at_step=3)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous"))
    body = {"prompt": PROMPT, "max_tokens": 20, "n": 2}
    with ServerThread(app) as running:
        if stream:
            *chunks, last = _events(running.url, body)
            assert chunks and all(c["choices"][0]["finish_reason"] is None for c in chunks)  # no finish, no [DONE]
        else:
            r = httpx.post(running.url + "/v1/completions", json=body, timeout=30)
            assert r.status_code == 500
            last = r.json()
        wait_until(lambda: active_rows(running.url) == 0)
    assert last["error"]["code"] == "engine_error" and "injected engine failure" in last["error"]["message"]
    assert _count(app, "autoopt_requests_total", {"cls": "P3", "outcome": "error"}) == 2



def test_a_streamed_request_whose_client_left_before_its_reply_started_withdraws_its_rows(served: ServedModel) -> None:
    """The client is gone before the reply's headers are out (its disconnect is the next message, the headers slow to
    send): Starlette cancels the reply's stream before it ever runs, and its cleanup with it. The rows are withdrawn
    anyway and counted as disconnected."""
    running, engine = paced_server(served, 0.02, [ServingClassConfig("P0", 0, 200.0, 1.0, 8, "reject")])
    app = running.server.config.app  # type: ignore[attr-defined]
    body = json.dumps({"prompt": PROMPT, "max_tokens": 100, "n": 2, "stream": True}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await asyncio.sleep(0.2)

    async def gone_early() -> None:  # on a loop of its own: the rows' replies post to it while it runs
        await app(scope, receive, send)
        counted = {"cls": "P0", "outcome": "disconnected"}
        while _count(app, "autoopt_requests_total", counted) < 2:
            await asyncio.sleep(0.02)

    try:
        asyncio.run(asyncio.wait_for(gone_early(), 10))
        wait_until(lambda: active_rows(running.url) == 0 and app.state.server.worker.snapshot().depth["P0"] == 0)
    finally:
        running.stop()
    assert engine.steps < 100  # neither row ran its 100 tokens
