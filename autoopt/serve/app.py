"""An OpenAI-compatible HTTP server for one loaded model, on the same scheduler and batcher as the
open-loop runner: HTTP in asyncio, the engine in one worker thread (`autoopt.serving.worker`).

Endpoints: POST /v1/completions, POST /v1/chat/completions (both with `"stream": true` as SSE),
GET /v1/models, GET /health, GET /metrics (Prometheus); the request bodies are `autoopt.serve.protocol`'s. A
request's class comes from its `priority` field (0-3 or "P0".."P3") or an `X-Priority` header, default the least
urgent class. Errors: 400 malformed/oversized, 404 unknown model, 413 body too large, 429 class queue full (with
Retry-After), 503 shutting down, 500 engine failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask
from tokenizers import Tokenizer

from autoopt.bundle.load import special_token_ids
from autoopt.config.serving import ServingConfig, check_serving
from autoopt.engines.base import Engine
from autoopt.engines.sampling import Sampling
from autoopt.serve.metrics import Metrics
from autoopt.serve.middleware import CLOCK, MAX_BODY_BYTES, RECEIVED, install_error_handlers
from autoopt.serve.protocol import (
    DEFAULT_MAX_TOKENS,
    ApiError,
    Body,
    ChatBody,
    CompletionBody,
    chat_prompt,
    error_response,
)
from autoopt.serve.reply import Reply, Text
from autoopt.serving.engine_thread import EngineThread
from autoopt.serving.runner import make_scheduler
from autoopt.serving.scheduler import REJECTED, ServingRequest
from autoopt.serving.worker import ServingWorker, WorkerClosed

DRAIN_TIMEOUT_S = 60.0  # at shutdown, how long the worker may take to answer the requests it admitted


class Servable(Protocol):
    """What the server needs from a loaded model (a bundle adapter, or anything else)."""

    engine: Engine
    tokenizer: Tokenizer
    model_name: str
    max_length: int  # longest prompt + completion, in tokens
    # Optional: `end_ids`, tokens a reply ends at besides the tokenizer's special ones (a model's eos_token_id list).


@dataclass
class ServedModel:
    engine: Engine
    tokenizer: Tokenizer
    model_name: str
    max_length: int
    end_ids: frozenset[int] = frozenset()  # tokens a reply ends at besides the tokenizer's special ones


class _Server:
    """State shared by the handlers of one app."""

    def __init__(self, model: Servable, cfg: ServingConfig, engine_thread: EngineThread | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.classes = sorted(cfg.classes, key=lambda c: c.priority)
        self.metrics = Metrics(self.classes)
        self.worker = ServingWorker(model.engine, make_scheduler(cfg, model.engine, model.max_length), clock=CLOCK,
                                    on_batch=self.metrics.batch_done, prefill_chunk=cfg.prefill_chunk,
                                    engine_thread=engine_thread)
        self.special = special_token_ids(model.tokenizer) | getattr(model, "end_ids", frozenset())
        self.vocab = model.tokenizer.get_vocab_size()
        self.ids = itertools.count(1)
        self.created = int(time.time())
        self.drain_timeout_s = DRAIN_TIMEOUT_S
        self.drained = True  # whether the worker answered every admitted request at shutdown
        self.shutting_down = False  # set by the HTTP server the moment its shutdown begins (`autoopt.serve.server`)
        self.cancelled_in_shutdown = 0  # requests whose handler the shutdown cancelled: left unanswered

    def resolve_class(self, field: int | str | None, header: str | None) -> str:
        value: int | str | None = field if field is not None else header
        if value is None:
            return self.classes[-1].name
        by_name = {c.name.lower(): c.name for c in self.classes}
        by_priority = {c.priority: c.name for c in self.classes}
        if isinstance(value, str):
            key = value.strip().lower()
            if key in by_name:
                return by_name[key]
            if key.lstrip("-").isdigit():
                value = int(key)
        if isinstance(value, int) and value in by_priority:
            return by_priority[value]
        known = ", ".join([*(str(p) for p in by_priority), *by_name.values()])
        raise ApiError(400, f"priority={value!r} is not a known class; use one of: {known}", "invalid_priority")

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model.model_name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {self.model.model_name!r}",
                           "model_not_found")

    def encode(self, prompt: str | list[int] | list[str]) -> list[int]:
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ApiError(400, f"prompt holds {len(prompt)} strings; send one prompt per request",
                               "invalid_prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.model.tokenizer.encode(prompt).ids
        else:
            ids = [int(i) for i in prompt]
            bad = [i for i in ids if not 0 <= i < self.vocab]
            if bad:
                raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab})",
                               "invalid_prompt")
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization; give at least one character", "invalid_prompt")
        return ids

    def check_length(self, prompt_len: int, max_tokens: int) -> None:
        needed = prompt_len + max_tokens
        if needed > self.model.max_length:
            raise ApiError(
                400,
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {needed} exceeds this model's "
                f"max_length {self.model.max_length}; shorten the prompt or lower max_tokens",
                "context_length_exceeded",
            )


def create_app(
    model: Servable, cfg: ServingConfig | None = None, *, max_body_bytes: int = MAX_BODY_BYTES,
    drain_timeout_s: float = DRAIN_TIMEOUT_S, engine_thread: EngineThread | None = None,
) -> FastAPI:
    """The FastAPI app serving `model` with `cfg`'s classes, policy and batching. The worker starts with the app's
    lifespan, on `engine_thread` where given (the thread that loaded and warmed up the engine: see
    `autoopt.serving.engine_thread`), and at shutdown finishes every admitted request before it ends (waiting up to
    `drain_timeout_s`; `app.state.server.drained` says whether it did)."""
    cfg = cfg or ServingConfig()
    check_serving(cfg)
    server = _Server(model, cfg, engine_thread)
    server.drain_timeout_s = drain_timeout_s

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.worker.start()
        try:
            yield
        except asyncio.CancelledError:
            # A second signal: uvicorn exits without the lifespan's shutdown and asyncio.run then cancels this task
            # with the requests' own, which withdraw their rows. Ending here instead of raising keeps starlette from
            # logging that cancellation as a failed shutdown, with a traceback.
            pass
        finally:
            server.drained = await asyncio.to_thread(server.worker.close, server.drain_timeout_s)

    app = FastAPI(title="autoopt", lifespan=lifespan)
    app.state.server = server
    install_error_handlers(app, max_body_bytes)

    @app.get("/health")
    async def health() -> Response:
        state = server.worker.snapshot()
        if server.shutting_down or state.closing:
            return error_response(503, "the server is shutting down", "shutting_down", "server_error")
        return JSONResponse({"status": "ok", "model": model.model_name, "queue_depth": state.depth,
                             "active_rows": state.active_rows})

    @app.get("/metrics")
    async def metrics() -> Response:
        state = server.worker.snapshot()
        for name, depth in state.depth.items():
            server.metrics.depth.labels(name).set(depth)
        server.metrics.active.set(state.active_rows)
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model.model_name, "object": "model", "created": server.created, "owned_by": "autoopt",
                "max_model_len": model.max_length}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request) -> Response:
        server.check_model(body.model)
        ids = server.encode(body.prompt)
        return await _generate(server, request, body, ids, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request) -> Response:
        server.check_model(body.model)
        ids = server.encode(chat_prompt(body.messages))
        return await _generate(server, request, body, ids, body.max_completion_tokens or body.max_tokens, chat=True)

    return app

async def _generate(server: _Server, request: Request, body: Body, ids: list[int], max_tokens: int | None,
                    *, chat: bool) -> Response:
    n = body.choices()
    body.refuse_unsupported()
    sampling = body.sampling()
    if sampling is not None and not sampling.greedy and not server.model.engine.samples:
        raise ApiError(400, f"temperature={body.temperature}: engine {server.model.engine.name} decodes greedily "
                       "only; leave temperature out or send 0", "unsupported_parameter")
    stops = body.stops()
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream=true", "invalid_request")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    server.check_length(len(ids), max_tokens)
    cls = server.resolve_class(body.priority, request.headers.get("x-priority"))
    queue = next(c for c in server.classes if c.name == cls)
    if n > queue.queue_limit and queue.on_full == "reject":  # its own choices would fill it: a 429 no retry clears
        raise ApiError(400, f"n={n} choices cannot all wait in class {cls}'s queue of {queue.queue_limit}; ask for "
                       f"at most {queue.queue_limit}", "invalid_n")
    received = request.scope.get("state", {}).get(RECEIVED, CLOCK())
    reply = Reply(asyncio.get_running_loop(), frozenset() if body.ignore_eos else server.special, received)
    item = ServingRequest(next(server.ids), cls, len(ids), max_tokens, reply.arrival, np.asarray(ids, dtype=np.int64),
                          sampling)
    usage = body.stream_options is not None and body.stream_options.include_usage
    first = _Meta(server, request, item, reply, chat, len(ids), stops, usage, body.ignore_eos)
    choices = [first, *(first.another(i, body.sampling(i)) for i in range(1, n))]
    _submit(server, choices)
    reading = _Choices(tuple(choices))
    if body.stream:
        # Where the client left before its reply started, Starlette cancels the stream before it runs, and its own
        # cleanup with it: the background task, run after the response however it ended, withdraws the rows then.
        return StreamingResponse(_stream(reading), media_type="text/event-stream",
                                 background=BackgroundTask(reading.finish, "disconnected"))
    return await _complete(reading)


def _submit(server: _Server, choices: list[_Meta]) -> None:
    """Queue every choice's row, or none: where the worker refuses one, the rows queued before it are withdrawn."""
    for k, choice in enumerate(choices):
        try:
            outcome = server.worker.submit(choice.item, choice.reply)
        except WorkerClosed as e:
            for queued in choices[:k]:
                queued.withdraw()
            raise ApiError(503, str(e), "shutting_down", "server_error") from e
        if outcome == REJECTED:
            for queued in choices[:k]:
                queued.withdraw()
            cls = choice.item.cls
            # /metrics counts choices (each a row with its own SLO verdict when served): a refusal counts one per
            # choice refused, so that a class's attainment weighs a request the same whether it is served or not.
            for _ in choices:
                server.metrics.rejected(cls)
            retry = max(1, round(server.cfg.max_queue_delay_ms / 1e3 + 1))
            raise ApiError(429, f"the {cls} queue is full; retry later or send a lower-priority request",
                           "queue_full", "rate_limit_error", {"Retry-After": str(retry)})


@dataclass
class _Meta:
    """One choice of a request (n=1: the request itself): its row and reply, with the request's fields (the same in
    each of its choices)."""

    server: _Server
    request: Request
    item: ServingRequest
    reply: Reply
    chat: bool
    prompt_tokens: int
    stops: list[str]
    stream_usage: bool  # a streamed reply ends with a chunk that holds the usage (stream_options.include_usage)
    # ignore_eos: streamed, every token sends a chunk, text or not (an end-of-text token's is empty), so that a load
    # test times each token as the capacity search does
    every_token: bool = False
    id: str = ""
    index: int = 0  # its place in the reply's `choices`
    detok: Text = field(init=False)
    ended: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.id = self.id or ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.detok = Text(self.server.model.tokenizer, self.stops)

    def another(self, index: int, sampling: Sampling | None) -> _Meta:
        """Choice `index` of the same request: a row of its own, with its own reply, arriving when the request did."""
        item = replace(self.item, id=next(self.server.ids), sampling=sampling)
        reply = Reply(asyncio.get_running_loop(), self.reply.special, self.reply.arrival)
        return replace(self, item=item, reply=reply, index=index)

    def withdraw(self) -> None:
        """Nobody will read the rest of its reply: drop its row if it waits, stop tracking it if it runs."""
        self.reply.cancelled = True
        self.server.worker.cancel(self.item.id)

    def finish(self, outcome: str) -> None:
        """Count how its request ended (ok, error, disconnected, shutdown); unless "ok", withdraw it."""
        if outcome != "ok":
            self.withdraw()
        self.server.metrics.record(self.item.cls, self.reply, outcome)

    def take(self, item: tuple[str, Any]) -> tuple[str, str | None]:
        """One item of the reply's queue: the text it adds, and the engine's failure if the reply ended with one
        (`ended` says whether it ended). At a stop string the reply ends and its row stops at its next token."""
        kind, value = item
        if kind == "token":
            token, t = value
            delta = self.detok.push(token)
            if self.detok.stopped:
                self.reply.cancelled = True
                self.reply.finish_reason = "stop"
                # The row may have generated a few more tokens before it saw the stop: the reply ended at this one.
                self.reply.stopped_at = t
            self.ended = self.detok.stopped
            return delta, None
        self.ended = True
        return "", None if value is None else f"the engine failed: {type(value).__name__}: {value}"

    def choice(self) -> dict[str, Any]:
        """Its entry in a whole (not streamed) reply's `choices`."""
        text, reason = self.detok.text(), self.reply.finish_reason
        if self.chat:
            return {"index": self.index, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        return {"index": self.index, "text": text, "logprobs": None, "finish_reason": reason}


class _Choices:
    """A request's choices, read together."""

    def __init__(self, choices: tuple[_Meta, ...]) -> None:
        self.all, self.first = choices, choices[0]
        self.finished = False
        self._gets: dict[int, asyncio.Future[tuple[str, Any]]] = {}  # a waiting read of each open choice's queue

    @property
    def open(self) -> bool:
        return not all(c.ended for c in self.all)

    async def next(self, gone: asyncio.Future[None]) -> tuple[_Meta, tuple[str, Any]] | None:
        """The next queue item of a choice still open (of those that have one, the lowest index's), or None once the
        client has gone."""
        for k, choice in enumerate(self.all):
            if not choice.ended and k not in self._gets:
                self._gets[k] = asyncio.ensure_future(choice.reply.queue.get())
        await asyncio.wait({gone, *self._gets.values()}, return_when=asyncio.FIRST_COMPLETED)
        ready = [k for k, get in self._gets.items() if get.done()]
        if not ready:
            return None
        k = min(ready)
        return self.all[k], self._gets.pop(k).result()

    def finish(self, outcome: str) -> None:
        """Count how the request ended, each choice as a request of its own; unless "ok", withdraw them all. Once:
        later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        for get in self._gets.values():
            get.cancel()
        if outcome == "shutdown":
            self.first.server.cancelled_in_shutdown += 1
        for choice in self.all:
            choice.finish(outcome)

    def usage(self) -> dict[str, int]:
        prompt, completion = self.first.prompt_tokens, sum(len(c.detok.ids) for c in self.all)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _cancelled(meta: _Meta, gone: asyncio.Future[None]) -> str:
    """The outcome of a handler that was cancelled. Starlette cancels a streamed reply whose client left (it notices
    before `gone` does, and `gone` is done before the cancellation arrives); otherwise only the server's shutdown
    cancels a handler: uvicorn's wait for the requests in flight ran out, or a second signal stopped it. Outside a
    shutdown a cancellation is the client's, whatever the order its notices arrived in."""
    return "shutdown" if meta.server.shutting_down and not gone.done() else "disconnected"


async def _complete(choices: _Choices) -> Response:
    gone = asyncio.ensure_future(_wait_disconnect(choices.first.request))
    outcome = "error"  # until the reply ends otherwise: an unexpected exception
    try:
        while choices.open:
            got = await choices.next(gone)
            if got is None:
                outcome = "disconnected"
                return Response(status_code=499)  # nobody reads it
            meta, item = got
            _, failure = meta.take(item)
            if failure:
                raise ApiError(500, failure, "engine_error", "server_error")
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = _cancelled(choices.first, gone)
        raise
    finally:
        gone.cancel()
        choices.finish(outcome)
    first, created = choices.first, int(time.time())
    obj = "chat.completion" if first.chat else "text_completion"
    return JSONResponse({"id": first.id, "object": obj, "created": created, "model": first.server.model.model_name,
                         "choices": [c.choice() for c in choices.all], "usage": choices.usage()})


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _stream(choices: _Choices) -> AsyncIterator[str]:
    metas, first = choices.all, choices.first
    cid, created, model = first.id, int(time.time()), first.server.model.model_name
    kind = "chat.completion.chunk" if first.chat else "text_completion"

    def chunk(meta: _Meta, delta: str, reason: str | None, role: bool = False) -> str:
        if meta.chat:
            content: dict[str, Any] = {"role": "assistant", "content": delta} if role else {"content": delta}
            choice: dict[str, Any] = {"index": meta.index, "delta": content if delta or role else {},
                                      "finish_reason": reason}
        else:
            choice = {"index": meta.index, "text": delta, "logprobs": None, "finish_reason": reason}
        return _sse({"id": cid, "object": kind, "created": created, "model": model, "choices": [choice]})

    gone = asyncio.ensure_future(_wait_disconnect(first.request))
    outcome = "error"  # until the reply ends otherwise: the engine failed, or an unexpected exception
    try:
        if first.chat:
            for meta in metas:
                yield chunk(meta, "", None, role=True)
        while choices.open:
            got = await choices.next(gone)
            if got is None:
                outcome = "disconnected"
                return
            meta, item = got
            delta, failure = meta.take(item)
            if delta or (meta.every_token and item[0] == "token"):
                yield chunk(meta, delta, None)
            if failure:
                yield _sse({"error": {"message": failure, "type": "server_error", "code": "engine_error"}})
                return
            if not meta.ended:
                continue
            if not choices.open:
                outcome = "ok"  # every reply was generated whole: only the last chunks are left to send
            rest = meta.detok.flush()
            if rest:
                yield chunk(meta, rest, None)
            yield chunk(meta, "", meta.reply.finish_reason)
        if first.stream_usage:
            yield _sse({"id": cid, "object": kind, "created": created, "model": model, "choices": [],
                        "usage": choices.usage()})
        yield _sse("[DONE]")
    except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: closed while it waited at a yield
        if outcome != "ok":
            outcome = _cancelled(first, gone)
        raise
    finally:
        gone.cancel()
        choices.finish(outcome)
