"""Run requests through an engine and timestamp every row's tokens, in one of two ways (`serving.batching`):

- group (`run_batch`): a batch formed by the scheduler runs to its longest row's `max_new_tokens` through one
  `generate` call, and only then is the next batch formed; a request that arrives mid-batch waits for it to end.
- continuous (`ContinuousBatch`): between decode steps, requests join the running batch (each prefilled alone,
  which holds the other rows' next step) and complete rows leave it, through the engine's `DecodeStream`. Only
  engines whose `continuous` is true have one (onnxruntime-genai's static Generator batch refuses a second
  `append_tokens`). With `prefill_chunk`, joiners' prompts are prefilled at most that many tokens before each
  decode step (the most urgent first), so a long prompt holds the running rows for one part at a time instead of
  all of it (chunked prefill; the joiner's own first token comes later by the steps in between).

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
StartSink = Callable[[ServingRequest, float], None]  # on_start(request, t): its prefill starts at t
Urgency = Callable[[ServingRequest, float], int]  # (request, now): lowest first (`Scheduler.urgency`)


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


class RowFailed(Exception):
    """A joiner's prefill failed: the stream goes on without that request, the others' rows untouched."""

    def __init__(self, request: ServingRequest, cause: BaseException) -> None:
        super().__init__(f"request {request.id}: {cause}")
        self.request, self.cause = request, cause


class ContinuousBatch:
    """A `DecodeStream`'s rows as requests: each joins with its prefill (its first token reported at once, or with
    `prefill_chunk` at its last part), gets one token per `step`, and leaves at its last token or when `on_token`
    returns False. `on_start` hears when each request's prefill starts (its queue time ends there); `urgency` orders
    the prompts waiting for parts (default: the order they joined)."""

    def __init__(self, engine: Engine, max_rows: int, clock: Callable[[], float], on_token: TokenSink, *,
                 on_start: StartSink | None = None, prefill_chunk: int = 0, urgency: Urgency | None = None) -> None:
        if not engine.continuous:
            raise ValueError(f"engine {engine.name} as loaded has no continuous batching; use serving batching=group")
        self._stream: DecodeStream = engine.stream()
        self._max_rows, self._clock, self._on_token = max_rows, clock, on_token
        self._on_start, self._chunk = on_start, prefill_chunk
        self._urgency: Urgency = urgency or (lambda request, now: 0)
        self._rows: dict[int, tuple[ServingRequest, int]] = {}  # id -> (request, tokens reported), prefilling too
        self._prefilling: dict[int, int] = {}  # id -> prompt tokens prefilled so far, in the order they joined

    @property
    def rows(self) -> int:
        """Requests in the stream: decoding, or (with `prefill_chunk`) still being prefilled."""
        return len(self._rows)

    @property
    def room(self) -> int:
        return self._max_rows - len(self._rows)

    def join(self, requests: list[ServingRequest]) -> None:
        """Prefill each request whole, in turn (with `prefill_chunk`: queue it, for `step` to prefill in parts)."""
        if len(requests) > self.room:
            raise ValueError(f"{len(requests)} requests cannot join a stream with room for {self.room}")
        if asks_none := [r.id for r in requests if r.max_new_tokens < 1]:
            raise ValueError(f"requests {asks_none} ask for no new tokens; a row needs at least 1")
        for request in requests:
            sampling = {"sampling": request.sampling} if _samples(request) else {}
            if self._chunk:
                self._stream.begin(request.id, request.prompt_ids, **sampling)
                self._rows[request.id] = (request, 0)
                self._prefilling[request.id] = 0
                continue
            self._start(request)
            token = self._stream.join(request.id, request.prompt_ids, **sampling)
            self._rows[request.id] = (request, 0)
            self._report(request.id, token, self._clock())

    def drop(self, key: int) -> bool:
        """Take request `key` out of the stream now, whether decoding or waiting for parts (its client went away); False
        if it is not in it."""
        if key not in self._rows:
            return False
        del self._rows[key]
        self._prefilling.pop(key, None)
        self._stream.leave(key)
        return True

    def step(self) -> int:
        """Up to `prefill_chunk` tokens of the waiting prompts (with `prefill_chunk`), then one decode step for every
        row in the batch; returns how many rows that step carried. Raises `RowFailed` where a part failed (its
        request has left; the decode step did not run)."""
        if self._prefilling:
            self._prefill_parts()
        rows = self._stream.rows
        if not rows:
            return 0
        tokens = self._stream.step()
        now = self._clock()
        for key, token in tokens.items():
            self._report(key, token, now)
        return rows

    def _prefill_parts(self) -> None:
        budget = self._chunk
        while budget and self._prefilling:
            now = self._clock()
            request = min((self._rows[key][0] for key in self._prefilling),
                          key=lambda r: self._urgency(r, now))  # ties: first joined
            done = self._prefilling[request.id]
            if not done:
                self._start(request)
            part = min(budget, request.prompt_len - done)
            try:
                token = self._stream.prefill(request.id, part)
            except Exception as e:
                del self._prefilling[request.id], self._rows[request.id]
                self._stream.leave(request.id)
                raise RowFailed(request, e) from e
            budget -= part
            if token is None:
                self._prefilling[request.id] = done + part
            else:
                del self._prefilling[request.id]
                self._report(request.id, token, self._clock())

    def _start(self, request: ServingRequest) -> None:
        if self._on_start is not None:
            self._on_start(request, self._clock())

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
