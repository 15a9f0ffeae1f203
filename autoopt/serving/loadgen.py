"""Seeded open-loop arrivals: when each request is sent, its class, and its prompt and output lengths.

A run at rate R offers exactly min(max_requests, round(R x duration_s)) requests over the window
count / R: the arrival process (Poisson or gamma) conditioned on its count, its gaps drawn at unit rate and
scaled to that window. Left free, a Poisson count is off R x duration_s by about 1 / sqrt(R x duration_s)
(13 % at 60 requests), and a figure measured "at rate R" would be taken at another rate. The requests
(classes, lengths, prompts) come from a stream of their own: every count offers the same first requests, and
two rates with the same count the same sequence, only compressed in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoopt.config.serving import ServingConfig


@dataclass(frozen=True)
class Arrival:
    """One request of the load: sent at `time_s` after the start of the run."""

    id: int
    time_s: float
    cls: str
    prompt_ids: np.ndarray  # int64 (prompt_len,), cut from the provided token stream
    max_new_tokens: int
    # seeds its rows' draws where the workload samples (None: its id): the same request of a load replayed at another
    # rate, shifted behind another warm-up, keeps its draws
    draw: int | None = None

    @property
    def prompt_len(self) -> int:
        return int(self.prompt_ids.shape[0])


def unit_gaps(arrival: str, burstiness: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` inter-arrival gaps with mean 1: exponential (poisson) or gamma with CV `burstiness`."""
    if arrival == "poisson":
        return rng.exponential(1.0, count)
    if arrival == "gamma":
        shape = 1.0 / burstiness**2  # CV of a gamma is 1/sqrt(shape)
        return rng.gamma(shape, 1.0 / shape, count)
    raise ValueError(f"arrival={arrival!r} is not known; choose poisson or gamma")


def expected_output_tokens(output_lengths: list[int]) -> float:
    """Output tokens per request in expectation: `make_arrivals` draws each request's length uniformly from them."""
    return float(np.mean(output_lengths))


def make_arrivals(
    cfg: ServingConfig,
    tokens: np.ndarray,
    prompt_lengths: list[int],
    output_lengths: list[int],
    rate_rps: float | None = None,
) -> list[Arrival]:
    """Arrivals at `rate_rps` (default `cfg.rate_rps`): min(`cfg.max_requests`, round(rate x `cfg.duration_s`))
    of them, within count / rate seconds (see the module's docstring).

    Class by `share` (normalized), prompt and output lengths uniformly from the workload's lists, each
    prompt a window of `tokens` at a random offset. Same config, tokens and rate -> same arrivals.
    """
    rate = cfg.rate_rps if rate_rps is None else rate_rps
    if rate <= 0:
        raise ValueError(f"rate_rps={rate} must be positive")
    if len(tokens) <= max(prompt_lengths):
        raise ValueError(f"the token stream has {len(tokens)} tokens, too few for prompts of {max(prompt_lengths)}")
    n = min(cfg.max_requests, round(rate * cfg.duration_s))
    # One stream per draw, so that the first k of each are the same at any count n.
    gaps_rng, class_rng, prompt_rng, output_rng, offset_rng = (np.random.default_rng([cfg.seed, i]) for i in range(5))
    # n + 1 gaps: the n arrivals and the gap after the last, so that the window ends one gap after it.
    ends = np.cumsum(unit_gaps(cfg.arrival, cfg.burstiness, n + 1, gaps_rng))
    times = ends[:n] / ends[n] * (n / rate)
    shares = np.asarray([c.share for c in cfg.classes], dtype=np.float64)
    classes = class_rng.choice(len(cfg.classes), size=n, p=shares / shares.sum())
    prompts = prompt_rng.choice(prompt_lengths, size=n)
    outputs = output_rng.choice(output_lengths, size=n)
    offsets = offset_rng.random(n)
    arrivals = []
    for i in range(n):
        p = int(prompts[i])
        start = int(offsets[i] * (len(tokens) - p))
        ids = np.asarray(tokens[start : start + p], dtype=np.int64)
        arrivals.append(Arrival(i, float(times[i]), cfg.classes[int(classes[i])].name, ids, int(outputs[i])))
    return arrivals
