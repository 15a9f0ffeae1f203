"""An open-loop serving run in ONE thread: arrivals are admitted at their scheduled times, the scheduler
releases batches, each batch runs through the engine (see `autoopt.serving.batcher`: per request group, or
joining a running batch between decode steps), and every request's tokens are timestamped on a real clock.

Open loop: a request's send time never depends on earlier replies, so a backlog shows up as latency
counted from the scheduled send time. A capacity probe starts with `warmup_s` of the same traffic whose
requests are served but not judged: from an empty queue a short probe sees less queueing than the rate
brings in steady state, so the figures count only the requests sent after it (the work of all of them counts
in the utilization). The run stops early (`saturated=True`) once the oldest waiting request lags more than
`saturation_lag_factor` x the largest deadline on a first or last token, or more than `saturation_queue`
requests wait: past that point the system cannot catch up and the rest would only burn time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from autoopt.config.schema import DecodingConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.base import Engine
from autoopt.engines.sampling import Sampling, workload_sampling
from autoopt.progress import say
from autoopt.serving.batcher import ContinuousBatch, run_batch
from autoopt.serving.loadgen import Arrival, make_arrivals
from autoopt.serving.metrics import DONE, REJECTED, RequestRecord, ServingReport, summarize
from autoopt.serving.scheduler import Scheduler, ServingRequest

BEST_EFFORT_LAG_S = 1.0  # the lag unit when no class has an SLO
WARMUP_STREAM = 99  # seed offset of a probe's warm-up: its count, and its requests' draws
MAX_JUDGED_STRETCH = 8.0  # min_judged lengthens a probe's judged phase to at most this x duration_s


def mixes_lengths(cfg: ServingConfig, engine: Engine) -> bool:
    """Whether a group batch's free rows may take other prompt lengths: the config asks and the engine can mask them
    (continuous batching takes any length anyway)."""
    return cfg.mix_lengths and engine.mixed_lengths and cfg.batching == "group"


def continuous(cfg: ServingConfig, engine: Engine) -> bool:
    """Whether requests join and leave a running batch between decode steps (their prompts prefilled whole or in
    parts of `prefill_chunk`); an engine that cannot is refused."""
    if cfg.batching != "continuous":
        return False
    if not engine.continuous:
        raise ValueError(f"serving batching=continuous: engine {engine.name} as loaded has no continuous batching "
                         "(torch with a dynamic KV cache, torch_compiled and ort on cpu have); use batching=group")
    return True


def make_scheduler(cfg: ServingConfig, engine: Engine, max_length: int | None = None) -> Scheduler:
    """The scheduler `cfg` describes for `engine` (shared by the open-loop runner and the HTTP server): it mixes
    prompt lengths in a batch where both allow it, within `max_length` tokens (prompt + new) a row."""
    return Scheduler(
        cfg.classes,
        policy=cfg.policy,
        max_batch=cfg.max_batch,
        max_queue_delay_s=cfg.max_queue_delay_ms / 1e3,
        starvation_s=cfg.starvation_ms / 1e3,
        starvation_every=cfg.starvation_every,
        max_waiting=cfg.saturation_queue,
        mix_lengths=mixes_lengths(cfg, engine),
        max_length=max_length,
        continuous=continuous(cfg, engine),
    )


def saturation_lag_s(cfg: ServingConfig) -> float:
    longest = max((max(c.slo_ms, c.ttft_slo_ms) for c in cfg.classes), default=0.0) / 1e3
    return cfg.saturation_lag_factor * (longest if longest > 0 else BEST_EFFORT_LAG_S)


def run_open_loop(
    engine: Engine,
    cfg: ServingConfig,
    arrivals: Sequence[Arrival],
    *,
    rate_rps: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    extra: dict[str, Any] | None = None,
    judged_from_s: float = 0.0,
    decoding: DecodingConfig | None = None,
) -> ServingReport:
    """Serve `arrivals` (times in seconds from the start) with `engine` under `cfg`'s scheduler. The report
    judges the requests sent at or after `judged_from_s`; earlier ones are load only (a warm-up). Where `decoding`
    samples, every request's row does, seeded by its `draw` (else its id)."""
    scheduler = make_scheduler(cfg, engine)
    records = {a.id: RequestRecord(a.id, a.cls, a.time_s) for a in arrivals}
    pending = deque(sorted(arrivals, key=lambda a: a.time_s))
    lag_bound = saturation_lag_s(cfg)
    t0 = clock()

    def now() -> float:
        return clock() - t0

    def on_token(request: ServingRequest, index: int, token: int, t: float) -> bool:
        record = records[request.id]
        record.token(t)
        if record.tokens == request.max_new_tokens:
            record.outcome = DONE
        return True

    batch_rows: list[tuple[float, int]] = []  # (start, rows) of every batch run (continuous: every decode step)
    busy_s = 0.0
    reason = ""
    def on_start(request: ServingRequest, t: float) -> None:  # each joiner's queue time ends at its own prefill
        records[request.id].start = t

    stream = (ContinuousBatch(engine, cfg.max_batch, now, on_token, on_start=on_start, prefill_chunk=cfg.prefill_chunk,
                              urgency=scheduler.urgency) if scheduler.continuous else None)
    while True:
        t = now()
        while pending and pending[0].time_s <= t:
            a = pending.popleft()
            sampling = workload_sampling(decoding, 1, a.id if a.draw is None else a.draw) if decoding else None
            request = ServingRequest(a.id, a.cls, a.prompt_len, a.max_new_tokens, a.time_s, a.prompt_ids,
                                     sampling[0] if sampling else None)
            if scheduler.submit(request) == REJECTED:
                records[a.id].outcome = REJECTED
        reason = _saturation(scheduler, t, lag_bound, cfg.saturation_queue)
        if reason:
            break
        room = None if stream is None else stream.room
        batch = scheduler.next_batch(t, room) if room != 0 else None
        if batch or (stream is not None and stream.rows):
            started = now()
            if stream is None:
                for request in batch:
                    records[request.id].start = t
                batch_rows.append((started, run_batch(engine, batch, now, on_token).rows))
            else:
                stream.join(batch or [])
                if stream.rows:
                    stepped = now()
                    if carried := stream.step():  # 0: a part of a prompt ran, and no row was decoding yet
                        batch_rows.append((stepped, carried))
            busy_s += now() - started
            continue
        release = scheduler.next_release(t, room)
        if not pending and release is None:
            break
        wake = min(x for x in (pending[0].time_s if pending else None, release) if x is not None)
        sleep(max(0.0, wake - now()))
    end = now()
    offered = [r for r in records.values() if r.arrival <= end]  # later ones were never sent
    judged = [r for r in offered if r.arrival >= judged_from_s]
    last_arrival = max((r.arrival for r in offered), default=0.0)
    return summarize(
        judged,
        cfg.classes,
        [rows for started, rows in batch_rows if started >= judged_from_s],
        max_batch=cfg.max_batch,
        duration_s=max(0.0, end - judged_from_s),
        rate_rps=cfg.rate_rps if rate_rps is None else rate_rps,
        saturated=bool(reason),
        saturation_reason=reason,
        extra=extra,
        drain_s=end - last_arrival,
        busy_s=busy_s,
        warmup_s=judged_from_s,
        warmup_offered=len(offered) - len(judged),
    )


def _saturation(scheduler: Scheduler, t: float, lag_bound: float, queue_bound: int) -> str:
    oldest = scheduler.oldest_arrival()
    if oldest is not None and t - oldest > lag_bound:
        return f"oldest waiting request lags {t - oldest:.2f}s > {lag_bound:.2f}s"
    if len(scheduler) > queue_bound:
        return f"{len(scheduler)} requests waiting > {queue_bound}"
    return ""


def warm_up(
    engine: Engine, tokens: np.ndarray, prompt_lengths: Sequence[int], max_batch: int, stream: bool = False,
    prefill_chunk: int = 0,
) -> None:
    """One short generation per (prompt length, batch rows) shape, so first-call costs stay out of a run; with
    `stream`, also each prompt length joining a stream (in parts of `prefill_chunk` tokens where it is set), and a
    decode step of each row count up to `max_batch`. Every stream row leaves after its step, as a one-token request
    would: a static cache holds any rows that each fit alone, not rows kept past their requests. Where the engine
    samples, one more short generation samples (copying a row's logits out has first-call costs of its own, on a
    GPU)."""
    lengths = sorted(set(prompt_lengths))
    for p in lengths:
        for rows in range(1, max_batch + 1):
            ids = np.stack([np.asarray(tokens[:p], dtype=np.int64)] * rows)
            for _ in engine.generate(ids, 2):
                pass
    if engine.samples:
        ids = np.asarray(tokens[: lengths[0]], dtype=np.int64)[None]
        for _ in engine.generate(ids, 2, sampling=[Sampling(temperature=1.0, top_p=0.9, seed=0)]):
            pass
    if stream:
        decode = engine.stream()
        for p in lengths:
            prompt = np.asarray(tokens[:p], dtype=np.int64)
            if prefill_chunk:
                decode.begin(0, prompt)
                while decode.prefill(0, prefill_chunk) is None:
                    pass
            else:
                decode.join(0, prompt)
            decode.step()
            decode.leave(0)
        if engine.samples:
            decode.join(0, np.asarray(tokens[: lengths[0]], dtype=np.int64), Sampling(temperature=1.0, seed=0))
            decode.step()
            decode.leave(0)
        for rows in range(2, max_batch + 1):
            for key, p in enumerate((lengths * rows)[:rows]):
                decode.join(key, np.asarray(tokens[:p], dtype=np.int64))
            decode.step()
            for key in range(rows):
                decode.leave(key)


def engine_system(
    engine: Engine,
    cfg: ServingConfig,
    tokens: np.ndarray,
    prompt_lengths: list[int],
    output_lengths: list[int],
    decoding: DecodingConfig | None = None,
) -> Callable[[float], ServingReport]:
    """`rate -> report`: one bounded open-loop run at that rate with the same seeded request sequence
    (what `autoopt.serving.capacity.find_capacity` probes)."""

    probes = 0

    def system(rate_rps: float) -> ServingReport:
        nonlocal probes
        probes += 1
        say(f"capacity probe {probes}: {rate_rps:.3g} req/s for {cfg.warmup_s + judged_seconds(cfg, rate_rps):.3g} s")
        arrivals = probe_arrivals(cfg, tokens, prompt_lengths, output_lengths, rate_rps)
        return run_open_loop(engine, cfg, arrivals, rate_rps=rate_rps, judged_from_s=cfg.warmup_s,
                             decoding=decoding)

    return system


def judged_seconds(cfg: ServingConfig, rate_rps: float) -> float:
    """How long a capacity probe at `rate_rps` offers its judged requests: `duration_s`, or long enough to offer
    `min_judged` of them where that is longer, up to MAX_JUDGED_STRETCH x `duration_s` (a search halving its rate
    after failures would otherwise run ever longer probes: 60 requests at 0.06 req/s take 16 minutes)."""
    return min(max(cfg.duration_s, cfg.min_judged / rate_rps), MAX_JUDGED_STRETCH * cfg.duration_s)


def probe_arrivals(
    cfg: ServingConfig, tokens: np.ndarray, prompt_lengths: list[int], output_lengths: list[int], rate_rps: float
) -> list[Arrival]:
    """A capacity probe offers its rate for `warmup_s`, then for `duration_s`, never capped by `max_requests`:
    capped by count, a high rate would be a short burst that a fast engine drains within its SLOs, and the
    search would double past any real capacity. (A rate the engine cannot sustain is stopped early by the
    saturation check.) The judged phase offers exactly round(rate x its seconds) requests over `judged_seconds`
    (`duration_s`, or longer to offer `min_judged`; count-conditioned,
    see `autoopt.serving.loadgen`: every count offers the same first requests). The warm-up is a free Poisson
    count over `warmup_s` (seeded), spread by the same process: conditioned on its count too, it would bring
    exactly its share of work and leave the queue as empty as no warm-up at all, where a real arrival
    process leaves it as its luck had it. Its requests are drawn apart from the judged ones (another seed). Where
    the workload samples, judged request k draws with seed k at every rate, and the warm-up's apart."""
    warm: list[Arrival] = []
    count = int(np.random.default_rng([cfg.seed, WARMUP_STREAM]).poisson(rate_rps * cfg.warmup_s)) if cfg.warmup_s else 0
    if count:
        window = replace(cfg, duration_s=cfg.warmup_s, max_requests=count, seed=cfg.seed + WARMUP_STREAM)
        warm = make_arrivals(window, tokens, prompt_lengths, output_lengths, count / cfg.warmup_s)
    judged_s = judged_seconds(cfg, rate_rps)
    steady = replace(cfg, duration_s=judged_s, max_requests=math.ceil(rate_rps * judged_s))
    judged = make_arrivals(steady, tokens, prompt_lengths, output_lengths, rate_rps)
    warm = [replace(a, draw=(WARMUP_STREAM << 32) + a.id) for a in warm]
    return warm + [replace(a, id=len(warm) + a.id, time_s=cfg.warmup_s + a.time_s, draw=a.id) for a in judged]
