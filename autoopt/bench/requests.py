"""Benchmark requests cut from real held-out text: one batch per (prompt length, output length)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from autoopt.config.errors import ConfigError
from autoopt.config.schema import DecodingConfig
from autoopt.engines.sampling import Sampling, workload_sampling


@dataclass(frozen=True)
class Request:
    input_ids: np.ndarray  # int64 (batch, prompt_len); rows are different passages
    max_new_tokens: int
    sampling: tuple[Sampling, ...] | None = None  # one per row where the workload samples; None: greedy

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.input_ids.shape, self.max_new_tokens)


def make_requests(
    tokens: np.ndarray, prompt_lengths: list[int], output_lengths: list[int], batch_size: int,
    decoding: DecodingConfig | None = None,
) -> list[Request]:
    """One request per (prompt length, output length) pair; rows start at spread-out offsets. Where `decoding`
    samples, each row samples, seeded by its place among all the requests' rows."""
    requests = []
    for i, (p, n) in enumerate(itertools.product(prompt_lengths, output_lengths)):
        span = len(tokens) - p
        if span <= 0:
            raise ConfigError(
                f"workload.prompt_lengths holds {p}, but the evaluation text (workload.eval_text) has {len(tokens)} "
                "tokens; use shorter prompts or a longer eval_text"
            )
        offsets = [(r * span // batch_size + i * 131) % span for r in range(batch_size)]
        rows = np.stack([tokens[o : o + p] for o in offsets]).astype(np.int64)
        sampling = workload_sampling(decoding, batch_size, i * batch_size) if decoding is not None else None
        requests.append(Request(rows, n, sampling))
    return requests
