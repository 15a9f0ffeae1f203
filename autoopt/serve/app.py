"""An OpenAI-compatible HTTP server for one loaded model, on the same scheduler and batcher as the
open-loop runner: HTTP in asyncio, the engine in one worker thread (`autoopt.serving.worker`).

Endpoints: POST /v1/completions, POST /v1/chat/completions (both with `"stream": true` as SSE),
GET /v1/models, GET /health, GET /metrics (Prometheus). Greedy decoding only: sampling fields such as
`temperature` are accepted and ignored; `stop` (up to 4 strings) ends the text before the first one found and
stops its row; `stream_options.include_usage` adds a last chunk with the usage. Fields that would change the
reply and are not implemented (`echo`, `logprobs`, `top_logprobs`, `best_of`, `suffix`) get a 400, never a
reply that silently lacks them. Chat content is text, or a list of text parts (joined). A request's class comes
from its `priority` field (0-3 or "P0".."P3") or an `X-Priority` header, default the least urgent class. Errors are JSON
`{"error": {"message", "type", "code"}}`: 400 malformed/oversized, 404 unknown model, 413 body too
large, 429 class queue full (with Retry-After), 503 shutting down, 500 engine failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tokenizers import Tokenizer

from autoopt.bundle.load import special_token_ids
from autoopt.config.serving import ServingConfig, check_serving
from autoopt.engines.base import Engine
from autoopt.serving.runner import make_scheduler
from autoopt.serving.scheduler import REJECTED, ServingRequest
from autoopt.serving.worker import ServingWorker, WorkerClosed

DEFAULT_MAX_TOKENS = 16
MAX_STOPS = 4  # OpenAI's limit on `stop` strings
MAX_BODY_BYTES = 1 << 20
DRAIN_TIMEOUT_S = 60.0  # at shutdown, how long the worker may take to answer the requests it admitted
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


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


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.headers = status, message, code, kind, headers


def error_response(status: int, message: str, code: str, kind: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# -- request bodies ---------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    priority: StrictInt | StrictStr | None = None
    n: StrictInt = 1
    stop: StrictStr | list[StrictStr] | None = None
    # OpenAI fields that would change the reply and are not implemented: refused, never silently ignored
    echo: StrictBool = False
    logprobs: StrictInt | StrictBool | None = None
    top_logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS or "" in stops:
            raise ApiError(400, f"stop holds {len(stops)} strings{' (one empty)' if '' in stops else ''}; give at "
                           f"most {MAX_STOPS}, none empty", "invalid_stop")
        return stops

    def refuse_unsupported(self) -> None:
        unsupported = {"echo": self.echo, "logprobs": self.logprobs is not None and self.logprobs is not False,
                       "top_logprobs": self.top_logprobs not in (None, 0),
                       "best_of": self.best_of not in (None, 1), "suffix": self.suffix is not None}
        for name, asked in unsupported.items():
            if asked:
                raise ApiError(400, f"{name} is not supported by this server (greedy text only); leave it out",
                               "unsupported_parameter")


class CompletionBody(_Body):
    prompt: StrictStr | list[StrictInt] | list[StrictStr]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr | list[TextPart]  # text, or OpenAI's content parts of type text (joined)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The simple chat template: one "role: content" line per message, then "assistant:"."""
    return "".join(f"{m.role}: {m.text()}\n" for m in messages) + "assistant:"


# -- the bridge from the worker thread to one request -------------------------------------------
class _Reply:
    """One request's token channel. `token`/`started`/`finished` run on the worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, special: frozenset[int], arrival: float) -> None:
        self._loop, self._special = loop, special
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = False
        self.finish_reason = "length"
        self.arrival = arrival
        self.start: float | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.stopped_at: float | None = None  # when the token that completed a stop string was generated
        self.done = False

    def _post(self, item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def started(self, t: float) -> None:
        self.start = t

    def token(self, index: int, token: int, t: float) -> bool:
        if self.cancelled:
            return False
        if index == 0:
            self.first = t
        self.last = t  # an end-of-text token ends the reply when it is generated: its time counts too
        if token in self._special:
            self.finish_reason = "stop"
            return False
        self._post(("token", (token, t)))
        return True

    def finished(self, error: BaseException | None) -> None:
        self._post(("end", error))


class _Text:
    """A reply's text as its tokens arrive. `push` returns the new text that is safe to send: it holds back an
    incomplete UTF-8 tail, and a tail that could still grow into one of `stops`. At the first stop string the text
    ends before it and `stopped` is set: the caller stops generating."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self._tokenizer, self._stops = tokenizer, stops
        self.ids: list[int] = []
        self.stopped = False
        self._text, self._sent = "", 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        self._text = self._tokenizer.decode(self.ids)
        complete = self._text.rstrip("\ufffd")  # the last character's bytes may still be arriving
        found = [i for i in (complete.find(stop) for stop in self._stops) if i >= 0]
        if found:
            self.stopped, self._text = True, complete[: min(found)]
            return self.flush()
        return self._emit(len(complete) - self._partial_stop(complete))

    def flush(self) -> str:
        """Everything not yet sent (the reply is over: an incomplete last character stays as U+FFFD)."""
        return self._emit(len(self._text))

    def text(self) -> str:
        return self._text

    def _emit(self, upto: int) -> str:
        delta = self._text[self._sent : upto]
        self._sent = max(self._sent, upto)
        return delta

    def _partial_stop(self, text: str) -> int:
        """The longest tail of `text` that is a stop string's beginning."""
        return max((k for stop in self._stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


# One clock for the moment a request reaches the server (`_Received`) and the worker's timestamps.
_CLOCK = time.perf_counter


# -- metrics --------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self, classes: list[str]) -> None:
        self.registry = CollectorRegistry()
        r, cls = self.registry, ["cls"]
        self.e2e = Histogram("autoopt_request_e2e_seconds", "end-to-end latency per class: from the request "
                             "reaching the server (before its body is read) to its last token", cls,
                             registry=r, buckets=LATENCY_BUCKETS)
        self.ttft = Histogram("autoopt_request_ttft_seconds", "time to first token per class, from the request "
                              "reaching the server", cls, registry=r, buckets=LATENCY_BUCKETS)
        self.queue = Histogram("autoopt_request_queue_seconds", "time from the request reaching the server to its "
                               "batch starting (continuous batching: its own prefill), per class", cls, registry=r,
                               buckets=LATENCY_BUCKETS)
        self.requests = Counter("autoopt_requests", "finished requests per class and outcome: ok, error (the engine "
                                "or the server failed), disconnected (the client left), shutdown (the server's "
                                "shutdown cancelled it unanswered)", ["cls", "outcome"], registry=r)
        self.rejections = Counter("autoopt_rejections", "requests refused with 429 per class", cls, registry=r)
        self.depth = Gauge("autoopt_queue_depth", "requests waiting per class", cls, registry=r)
        self.active = Gauge("autoopt_active_rows", "rows of the running batch still tracked", registry=r)
        self.batch = Histogram("autoopt_batch_size", "rows per engine call (continuous batching: per decode step)",
                               registry=r,
                               buckets=tuple(float(b) for b in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)))
        self.busy = Counter("autoopt_engine_busy_seconds", "seconds the engine spent running batches: its rate is "
                            "the utilization a capacity probe must keep at or below 1", registry=r)
        for name in classes:
            for metric in (self.e2e, self.ttft, self.queue, self.rejections, self.depth):
                metric.labels(name)

    def batch_done(self, rows: int, seconds: float) -> None:
        if rows:
            self.batch.observe(rows)
        self.busy.inc(seconds)

    def record(self, cls: str, reply: _Reply, outcome: str) -> None:
        self.requests.labels(cls, outcome).inc()
        if reply.start is not None:
            self.queue.labels(cls).observe(reply.start - reply.arrival)
        end = reply.stopped_at if reply.stopped_at is not None else reply.last
        if outcome == "ok" and reply.first is not None and end is not None:
            self.ttft.labels(cls).observe(reply.first - reply.arrival)
            self.e2e.labels(cls).observe(end - reply.arrival)


# -- the app ----------------------------------------------------------------------------------------
class _Server:
    """State shared by the handlers of one app."""

    def __init__(self, model: Servable, cfg: ServingConfig) -> None:
        self.model, self.cfg = model, cfg
        self.classes = sorted(cfg.classes, key=lambda c: c.priority)
        self.metrics = _Metrics([c.name for c in self.classes])
        self.worker = ServingWorker(model.engine, make_scheduler(cfg, model.engine, model.max_length), clock=_CLOCK,
                                    on_batch=self.metrics.batch_done)
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
                raise ApiError(400, f"prompt holds {len(prompt)} strings; send one prompt per request", "invalid_prompt")
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
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
) -> FastAPI:
    """The FastAPI app serving `model` with `cfg`'s classes, policy and batching. The worker thread starts
    with the app's lifespan and, at shutdown, finishes every admitted request before it ends (waiting up to
    `drain_timeout_s`; `app.state.server.drained` says whether it did)."""
    cfg = cfg or ServingConfig()
    check_serving(cfg)
    server = _Server(model, cfg)
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
    _install_error_handlers(app, max_body_bytes)

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


_RECEIVED = "autoopt_received"


class _Received:
    """Stamp when a request reaches the server, before its body is read, parsed and tokenized: the latencies the
    server reports start there (the scheduler's queue delay too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[_RECEIVED] = _CLOCK()
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse a body over `limit` bytes with 413: a declared one before anything reads it, a chunked one (no
    Content-Length) once `limit` bytes of it arrived. Plain ASGI, so that streaming responses and disconnect
    detection pass through untouched."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is None:
                replay = await _read_body(receive, self.limit)
                if replay is None:
                    await self._refuse(f"more than {self.limit}", scope, receive, send)
                    return
                receive = replay
            elif not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(declared.decode("latin-1"), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, length: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body of {length} bytes exceeds the limit of {self.limit}",
                                  "body_too_large")
        await response(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> Receive | None:
    """Read a body of undeclared length up front; None once it passes `limit` bytes, else a `receive` that
    replays it and then listens on (for the disconnect)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


def _install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    app.add_middleware(_Received)  # added last, so it runs first

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> Response:
        return error_response(e.status, e.message, e.code, e.kind, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is the character offset
            at = first.get("loc", ("body", "?"))[-1]
            reason = first.get("ctx", {}).get("error", first.get("msg", ""))
            return error_response(400, f"the request body is not valid JSON (at character {at}): {reason}",
                                  "invalid_request")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return error_response(400, message, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        code = "not_found" if e.status_code == 404 else f"http_{e.status_code}"
        return error_response(e.status_code, str(e.detail), code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> Response:
        return error_response(500, f"internal error: {type(e).__name__}: {e}", "internal_error", "server_error")


async def _generate(server: _Server, request: Request, body: _Body, ids: list[int], max_tokens: int | None,
                    *, chat: bool) -> Response:
    if body.n != 1:
        raise ApiError(400, f"n={body.n} is not supported; greedy decoding gives one choice, send n=1", "invalid_n")
    body.refuse_unsupported()
    stops = body.stops()
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream=true", "invalid_request")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    server.check_length(len(ids), max_tokens)
    cls = server.resolve_class(body.priority, request.headers.get("x-priority"))
    worker = server.worker
    received = request.scope.get("state", {}).get(_RECEIVED, _CLOCK())
    reply = _Reply(asyncio.get_running_loop(), server.special, received)
    item = ServingRequest(next(server.ids), cls, len(ids), max_tokens, reply.arrival, np.asarray(ids, dtype=np.int64))
    try:
        outcome = worker.submit(item, reply)
    except WorkerClosed as e:
        raise ApiError(503, str(e), "shutting_down", "server_error") from e
    if outcome == REJECTED:
        server.metrics.rejections.labels(cls).inc()
        retry = max(1, round(server.cfg.max_queue_delay_ms / 1e3 + 1))
        raise ApiError(429, f"the {cls} queue is full; retry later or send a lower-priority request",
                       "queue_full", "rate_limit_error", {"Retry-After": str(retry)})
    usage = body.stream_options is not None and body.stream_options.include_usage
    meta = _Meta(server, request, item, reply, chat, len(ids), stops, usage)
    if body.stream:
        return StreamingResponse(_stream(meta), media_type="text/event-stream")
    return await _complete(meta)


@dataclass
class _Meta:
    server: _Server
    request: Request
    item: ServingRequest
    reply: _Reply
    chat: bool
    prompt_tokens: int
    stops: list[str]
    stream_usage: bool  # a streamed reply ends with a chunk that holds the usage (stream_options.include_usage)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]

    def finish(self, outcome: str) -> None:
        """Count how the request ended (ok, error, disconnected, shutdown). Unless "ok", nobody will read the rest of
        its reply: drop the request if it waits, stop tracking its row if it runs."""
        if outcome != "ok":
            self.reply.cancelled = True
            self.server.worker.cancel(self.item.id)
        if outcome == "shutdown":
            self.server.cancelled_in_shutdown += 1
        self.server.metrics.record(self.item.cls, self.reply, outcome)

    def text(self) -> _Text:
        return _Text(self.server.model.tokenizer, self.stops)

    def take(self, detok: _Text, item: tuple[str, Any]) -> tuple[str, bool, str | None]:
        """One item of the reply's queue: (the text it adds, whether the reply ended, the engine's failure if it
        ended with one). At a stop string the reply ends and its row stops at its next token."""
        kind, value = item
        if kind == "token":
            token, t = value
            delta = detok.push(token)
            if detok.stopped:
                self.reply.cancelled = True
                self.reply.finish_reason = "stop"
                # The row may have generated a few more tokens before it saw the stop: the reply ended at this one.
                self.reply.stopped_at = t
            return delta, detok.stopped, None
        return "", True, None if value is None else f"the engine failed: {type(value).__name__}: {value}"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next_item(reply: _Reply, gone: asyncio.Future[None]) -> tuple[str, Any] | None:
    """The reply's next queue item, or None once the client has gone."""
    get = asyncio.ensure_future(reply.queue.get())
    try:
        await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        get.cancel()
    return get.result() if get.done() else None


def _cancelled(meta: _Meta, gone: asyncio.Future[None]) -> str:
    """The outcome of a handler that was cancelled. Starlette cancels a streamed reply whose client left (it notices
    before `gone` does, and `gone` is done before the cancellation arrives); otherwise only the server's shutdown
    cancels a handler: uvicorn's wait for the requests in flight ran out, or a second signal stopped it. Outside a
    shutdown a cancellation is the client's, whatever the order its notices arrived in."""
    return "shutdown" if meta.server.shutting_down and not gone.done() else "disconnected"


async def _complete(meta: _Meta) -> Response:
    detok = meta.text()
    gone = asyncio.ensure_future(_wait_disconnect(meta.request))
    outcome = "error"  # until the reply ends otherwise: an unexpected exception
    try:
        while True:
            item = await _next_item(meta.reply, gone)
            if item is None:
                outcome = "disconnected"
                return Response(status_code=499)  # nobody reads it
            _, ended, failure = meta.take(detok, item)
            if not ended:
                continue
            if failure:
                raise ApiError(500, failure, "engine_error", "server_error")
            outcome = "ok"
            break
    except asyncio.CancelledError:
        outcome = _cancelled(meta, gone)
        raise
    finally:
        gone.cancel()
        meta.finish(outcome)
    text, reason, created = detok.text(), meta.reply.finish_reason, int(time.time())
    model = meta.server.model.model_name
    if meta.chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        obj = "text_completion"
    return JSONResponse({"id": meta.id, "object": obj, "created": created, "model": model, "choices": [choice],
                         "usage": meta.usage(len(detok.ids))})


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _stream(meta: _Meta) -> AsyncIterator[str]:
    detok = meta.text()
    cid, created, model = meta.id, int(time.time()), meta.server.model.model_name

    def chunk(delta: str, reason: str | None, first: bool = False) -> str:
        if meta.chat:
            content: dict[str, Any] = {"role": "assistant", "content": delta} if first else {"content": delta}
            choice: dict[str, Any] = {"index": 0, "delta": content if delta or first else {}, "finish_reason": reason}
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [choice]})
        choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}
        return _sse({"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [choice]})

    gone = asyncio.ensure_future(_wait_disconnect(meta.request))
    outcome = "error"  # until the reply ends otherwise: the engine failed, or an unexpected exception
    try:
        if meta.chat:
            yield chunk("", None, first=True)
        while True:
            item = await _next_item(meta.reply, gone)
            if item is None:
                outcome = "disconnected"
                return
            delta, ended, failure = meta.take(detok, item)
            if delta:
                yield chunk(delta, None)
            if not ended:
                continue
            if failure:
                yield _sse({"error": {"message": failure, "type": "server_error", "code": "engine_error"}})
                return
            outcome = "ok"
            rest = detok.flush()
            if rest:
                yield chunk(rest, None)
            yield chunk("", meta.reply.finish_reason)
            if meta.stream_usage:
                kind = "chat.completion.chunk" if meta.chat else "text_completion"
                yield _sse({"id": cid, "object": kind, "created": created, "model": model, "choices": [],
                            "usage": meta.usage(len(detok.ids))})
            yield _sse("[DONE]")
            return
    except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: closed while it waited at a yield
        if outcome != "ok":  # the whole reply was generated: only its last chunks were not sent
            outcome = _cancelled(meta, gone)
        raise
    finally:
        gone.cancel()
        meta.finish(outcome)
