"""Run the HTTP app with uvicorn: in the foreground (`serve`, what the CLI calls) or in a background
thread (`ServerThread`, for tests and embedding). Shutdown is graceful either way: /health answers 503 until the
listener closes, in-flight requests run to completion (up to `graceful_timeout_s`), then the engine's worker drains."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from autoopt.config.serving import ServingConfig
from autoopt.serve.app import Servable, create_app
from autoopt.serving.engine_thread import EngineThread
from autoopt.signals import Stopped

GRACEFUL_TIMEOUT_S = 60


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, its `should_exit` kept in the app's state: /health answers 503 from the moment shutdown
    begins (a signal, `ServerThread.stop`), not only at the lifespan's end. uvicorn itself closes its listener and
    idle connections within about 0.1 s of that, after which a probe is refused rather than answered; an app
    served by something else answers 503 for as long as that server keeps taking requests."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        self._app = app
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._app.state.server.shutting_down

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._app.state.server.shutting_down = value


def uvicorn_server(app: FastAPI, host: str, port: int, *, log_level: str = "info",
                   graceful_timeout_s: int = GRACEFUL_TIMEOUT_S) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=graceful_timeout_s, access_log=log_level == "debug")
    return _Uvicorn(config, app)


def cut_off(server: uvicorn.Server, app: FastAPI) -> str:
    """Why requests in flight were left unanswered when `server` stopped, or "" if none was."""
    state = app.state.server
    if server.force_exit:
        return "a second signal stopped the server without waiting for the requests in flight"
    if state.cancelled_in_shutdown:
        return (f"{state.cancelled_in_shutdown} request(s) in flight outlasted the HTTP server's "
                f"{server.config.timeout_graceful_shutdown:g} s wait for them and were cancelled unanswered")
    if not state.drained:
        return (f"requests in flight outlasted the shutdown's {state.drain_timeout_s:g} s wait and were left "
                "unanswered")
    return ""


def serve(model: Servable, cfg: ServingConfig, host: str, port: int, *, log_level: str = "info",
          engine_thread: EngineThread | None = None) -> None:
    """Serve until SIGINT/SIGTERM, finishing in-flight requests first. uvicorn handles the signal during the run
    and raises it again once it has shut down, with the handlers it found: inside `stopping_on_signals`, that
    raises `Stopped` here (with `cut_off` saying why, where requests in flight were left unanswered). The engine runs
    on `engine_thread` where given (see `create_app`)."""
    app = create_app(model, cfg, engine_thread=engine_thread)
    server = uvicorn_server(app, host, port, log_level=log_level)
    try:
        server.run()
    except Stopped as e:
        e.cut_off = cut_off(server, app)
        raise


class ServerThread:
    """uvicorn in a daemon thread on `host`:`port` (0 = a free port, read `.port` after `start`)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 graceful_timeout_s: int = GRACEFUL_TIMEOUT_S) -> None:
        self.server = uvicorn_server(app, host, port, log_level=log_level, graceful_timeout_s=graceful_timeout_s)
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="autoopt-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port} within {timeout_s}s")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Graceful shutdown (as on SIGTERM); True once the thread ended."""
        self.server.should_exit = True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
