"""What the server's tests share: the tiny model's prompt and length, engines paced to let a test act mid-request,
and waits on a running server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np

from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.engines.base import Engine
from autoopt.engines.sampling import Sampling
from autoopt.engines.stream import DecodeStream
from autoopt.serve.app import ServedModel, create_app
from autoopt.serve.server import ServerThread

PROMPT = "def read_file(path):"
MAX_LENGTH = 256


class PacedEngine(Engine):
    """The real engine with a pause after each step, so a test can act mid-request. Timing is not measured."""

    name = "paced"

    def __init__(self, inner: Engine, pause_s: float) -> None:
        self.inner, self.pause_s, self.steps = inner, pause_s, 0

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        for tokens in self.inner.generate(input_ids, max_new_tokens):
            self.steps += 1
            time.sleep(self.pause_s)
            yield tokens

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        return self.inner.logits(input_ids)


def paced_server(served: ServedModel, pause_s: float, classes: list[ServingClassConfig]) -> tuple[ServerThread, PacedEngine]:
    engine = PacedEngine(served.engine, pause_s)
    model = ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH)
    app = create_app(model, ServingConfig(classes=classes, max_batch=1, max_queue_delay_ms=0.0))
    return ServerThread(app).start(), engine


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def active_rows(url: str) -> int:
    return httpx.get(url + "/health", timeout=5).json()["active_rows"]


class PacedStreams(Engine):
    """The real engine's continuous batching with a pause after each step, recording each step's rows."""

    name = "paced-streams"
    continuous = True

    def __init__(self, inner: Engine, pause_s: float, fail_at_step: int | None = None,
                 fail_prompt_len: int | None = None) -> None:
        self.inner, self.pause_s, self.steps, self.fail_at_step = inner, pause_s, [], fail_at_step
        self.fail_prompt_len = fail_prompt_len
        self.samples = inner.samples

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None):
        return self.inner.generate(input_ids, max_new_tokens)  # the worker's warm-up only

    def stream(self) -> DecodeStream:
        outer, inner = self, self.inner.stream()

        class Paced(DecodeStream):
            rows = property(lambda _: inner.rows)
            leave = inner.leave

            def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
                if len(prompt_ids) == outer.fail_prompt_len:
                    raise RuntimeError("injected prefill failure")
                return inner.join(key, prompt_ids, sampling)

            failing: set[int] = set()

            def begin(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> None:
                if len(prompt_ids) == outer.fail_prompt_len:
                    self.failing.add(key)
                inner.begin(key, prompt_ids, sampling)

            def prefill(self, key: int, tokens: int) -> int | None:
                if key in self.failing:
                    raise RuntimeError("injected prefill failure")
                return inner.prefill(key, tokens)

            def step(self) -> dict[int, int]:
                outer.steps.append(inner.rows)
                time.sleep(outer.pause_s)
                if len(outer.steps) == outer.fail_at_step:
                    raise RuntimeError("injected engine failure")
                return inner.step()

        return Paced()

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        return self.inner.logits(input_ids)
