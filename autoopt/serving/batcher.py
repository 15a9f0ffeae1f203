"""Run one released batch through an engine and timestamp every row's tokens.

Batching is per request group: a batch is formed by the scheduler, run to its longest row's
`max_new_tokens`, and only then is the next batch formed. No engine behind `autoopt.engines.base`
can join a request to a running batch between decode steps (their `generate` is one synchronous
call per group, and onnxruntime-genai's static Generator batch refuses a second `append_tokens`), so
there is no continuous batching here; a request that arrives mid-batch waits for the batch to end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoopt.engines.base import Engine
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
