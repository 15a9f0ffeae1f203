"""Run requests through an engine and timestamp every row's tokens, in one of two ways (`serving.batching`):

- group (`run_batch`): a batch formed by the scheduler runs to its longest row's `max_new_tokens` through one
  `generate` call, and only then is the next batch formed; a request that arrives mid-batch waits for it to end.
- continuous (`ContinuousBatch`): between decode steps, requests join the running batch (each prefilled alone,
  which holds the other rows' next step) and complete rows leave it, through the engine's `DecodeStream`. Only
  engines whose `continuous` is true have one (onnxruntime-genai's static Generator batch refuses a second
  `append_tokens`).

A request with a non-greedy `sampling` draws its row's tokens (`autoopt.engines.sampling`); greedy rows share its
batch unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from autoopt.engines.base import Engine
from autoopt.engines.stream import DecodeStream
from autoopt.serving.scheduler import ServingRequest

# on_token(request, index, token, t) -> keep tracking this row? `index` counts from 0 (0 = first token).
TokenSink = Callable[[ServingRequest, int, int, float], bool]


@dataclass(frozen=True)
class BatchRun:
    """What one engine call did: when it started and ended, and how many rows it carried."""

    start: float
    end: float
    rows: int
    steps: int  # decode steps run (the loop stops early once no row is tracked)


def run_batch(engine: Engine, batch: list[ServingRequest], clock: Callable[[], float], on_token: TokenSink) -> BatchRun:
    """Generate for `batch` and report each row's tokens through `on_token`.

    Rows of different prompt lengths go in one call, padded after each prompt (`prompt_lengths`; the engine
    masks the padding), so the prefill runs at the longest prompt's length for every row. A row is complete
    at its own last token (`max_new_tokens` of its request): shorter rows ride along untracked until the
    longest finishes. A row stops being tracked early when `on_token` returns False (end of text, a client
    that went away); once no row is tracked the engine's generator is closed, so no more decode steps run.
    `clock` timestamps each yielded step (host arrays: the device is done).
    """
    lengths = [r.prompt_len for r in batch]
    mixed = len(set(lengths)) > 1
    if mixed and not engine.mixed_lengths:
        raise ValueError(f"engine {engine.name} as loaded takes equal prompt lengths only, got {sorted(set(lengths))}")
    ids = np.zeros((len(batch), max(lengths)), dtype=np.int64)
    for row, request in enumerate(batch):
        ids[row, : request.prompt_len] = request.prompt_ids
    live = [r.max_new_tokens > 0 for r in batch]
    steps = 0
    start = clock()
    new_tokens = max(r.max_new_tokens for r in batch)
    padding = {"prompt_lengths": np.asarray(lengths)} if mixed else {}
    if any(_samples(r) for r in batch):  # a short row rides along untracked: it draws its own tokens only
        padding["sampling"] = [replace(r.sampling, draws=r.max_new_tokens) if _samples(r) else None for r in batch]
    generator = engine.generate(ids, new_tokens, **padding)
    try:
        for index, tokens in enumerate(generator):
            now = clock()
            steps += 1
            for row, request in enumerate(batch):
                if not live[row]:
                    continue
                keep = on_token(request, index, int(tokens[row]), now)
                live[row] = keep and index + 1 < request.max_new_tokens
            if not any(live):
                break
    finally:
        close = getattr(generator, "close", None)
        if close is not None:
            close()
    return BatchRun(start=start, end=clock(), rows=len(batch), steps=steps)


class ContinuousBatch:
    """A `DecodeStream`'s rows as requests: each joins with its prefill (its first token reported at once), gets one
    token per `step`, and leaves at its last token or when `on_token` returns False."""

    def __init__(self, engine: Engine, max_rows: int, clock: Callable[[], float], on_token: TokenSink) -> None:
        if not engine.continuous:
            raise ValueError(f"engine {engine.name} as loaded has no continuous batching; use serving batching=group")
        self._stream: DecodeStream = engine.stream()
        self._max_rows, self._clock, self._on_token = max_rows, clock, on_token
        self._rows: dict[int, tuple[ServingRequest, int]] = {}  # id -> (request, tokens reported)

    @property
    def rows(self) -> int:
        return len(self._rows)

    @property
    def room(self) -> int:
        return self._max_rows - len(self._rows)

    def join(self, requests: list[ServingRequest]) -> None:
        if len(requests) > self.room:
            raise ValueError(f"{len(requests)} requests cannot join a stream with room for {self.room}")
        if asks_none := [r.id for r in requests if r.max_new_tokens < 1]:
            raise ValueError(f"requests {asks_none} ask for no new tokens; a row needs at least 1")
        for request in requests:
            sampling = {"sampling": request.sampling} if _samples(request) else {}
            token = self._stream.join(request.id, request.prompt_ids, **sampling)
            self._rows[request.id] = (request, 0)
            self._report(request.id, token, self._clock())

    def step(self) -> int:
        """One decode step for every row; returns how many rows it carried."""
        rows = len(self._rows)
        tokens = self._stream.step()
        now = self._clock()
        for key, token in tokens.items():
            self._report(key, token, now)
        return rows

    def _report(self, key: int, token: int, t: float) -> None:
        request, index = self._rows[key]
        keep = self._on_token(request, index, token, t)
        if keep and index + 1 < request.max_new_tokens:
            self._rows[key] = (request, index + 1)
        else:
            del self._rows[key]
            self._stream.leave(key)


def _samples(request: ServingRequest) -> bool:
    """Whether the request's rows draw tokens (a batch without one runs the engine's greedy calls alone)."""
    return request.sampling is not None and not request.sampling.greedy
