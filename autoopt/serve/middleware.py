"""What runs around the handlers: the arrival stamp that the server's latencies start from, the limit on a
request body's size (413), and the exception handlers that answer every error with the OpenAI error body."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoopt.serve.protocol import ApiError, error_response

MAX_BODY_BYTES = 1 << 20

# One clock for the moment a request reaches the server (`_Received`) and the worker's timestamps.
CLOCK = time.perf_counter
RECEIVED = "autoopt_received"


class _Received:
    """Stamp when a request reaches the server, before its body is read, parsed and tokenized: the latencies the
    server reports start there (the scheduler's queue delay too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[RECEIVED] = CLOCK()
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


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
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
