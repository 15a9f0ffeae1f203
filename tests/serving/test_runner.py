from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoopt.config.schema import DecodingConfig
from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.engines.base import Engine
from autoopt.engines.sampling import Sampling
from autoopt.engines.stream import DecodeStream
from autoopt.serving.batcher import ContinuousBatch, RowFailed
from autoopt.serving.loadgen import Arrival, make_arrivals
from autoopt.serving.runner import WARMUP_STREAM, engine_system, probe_arrivals, run_open_loop
from autoopt.serving.scheduler import Scheduler, ServingRequest
from autoopt.serving.worker import ServingWorker


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class SteppedEngine(Engine):
    """Scheduling test double: each step costs `step_s` on the fake clock. Not a measurement."""

    name = "stepped"
    mixed_lengths = True

    samples = True

    def __init__(self, clock: FakeClock, step_s: float) -> None:
        self.clock, self.step_s, self.calls, self.inputs, self.sampling = clock, step_s, [], [], []

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: list[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        self.sampling.append(sampling)
        self.calls.append((input_ids.shape[0], max_new_tokens))
        self.inputs.append((input_ids.copy(), None if prompt_lengths is None else prompt_lengths.tolist()))
        for i in range(max_new_tokens):
            self.clock.t += self.step_s
            yield np.full(input_ids.shape[0], i, dtype=np.int64)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        raise NotImplementedError


class SteppedStream(DecodeStream):
    """Scheduling test double: a join costs `prefill_s`, a step `step_s`, on the fake clock. Not a measurement."""

    def __init__(self, engine: SteppedEngine, prefill_s: float) -> None:
        self.engine, self.prefill_s, self.keys, self.steps = engine, prefill_s, [], []

    @property
    def rows(self) -> int:
        return len(self.keys)

    def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
        self.engine.sampling.append(sampling)
        self.engine.clock.t += self.prefill_s
        self.keys.append(key)
        return 0

    def begin(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> None:
        raise AssertionError("this double's prompts join whole")

    def prefill(self, key: int, tokens: int) -> int | None:
        raise AssertionError("this double's prompts join whole")

    def step(self) -> dict[int, int]:
        self.engine.clock.t += self.engine.step_s
        self.steps.append(list(self.keys))
        return {k: 1 for k in self.keys}

    def leave(self, key: int) -> None:
        self.keys.remove(key)


class StreamingEngine(SteppedEngine):
    continuous = True

    def stream(self) -> SteppedStream:
        self.opened = SteppedStream(self, prefill_s=self.step_s)
        return self.opened


class PartedStream(SteppedStream):
    """`SteppedStream` whose prompts may also join in parts, each token of a prompt costing `token_s`; a prompt
    listed in `failing` fails at its second part. Scheduling test double, not a measurement."""

    def __init__(self, engine: SteppedEngine, token_s: float, failing: set[int]) -> None:
        super().__init__(engine, prefill_s=0.0)
        self.token_s, self.failing, self.left_over, self.parts = token_s, failing, {}, []

    def join(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> int:
        self.engine.clock.t += self.token_s * len(prompt_ids)
        return super().join(key, prompt_ids, sampling)

    def begin(self, key: int, prompt_ids: np.ndarray, sampling: Sampling | None = None) -> None:
        self.left_over[key] = len(prompt_ids)

    def prefill(self, key: int, tokens: int) -> int | None:
        part = min(tokens, self.left_over[key])
        if key in self.failing and self.left_over[key] < tokens * 2:
            raise RuntimeError("out of memory")
        self.engine.clock.t += self.token_s * part
        self.parts.append((key, part))
        self.left_over[key] -= part
        if self.left_over[key]:
            return None
        del self.left_over[key]
        self.keys.append(key)
        return 0

    def leave(self, key: int) -> None:
        if self.left_over.pop(key, None) is None:
            super().leave(key)


class PartingEngine(StreamingEngine):
    def __init__(self, clock: FakeClock, step_s: float, token_s: float, failing: set[int] | None = None) -> None:
        super().__init__(clock, step_s)
        self.token_s, self.failing = token_s, failing or set()

    def stream(self) -> PartedStream:
        self.opened = PartedStream(self, self.token_s, self.failing)
        return self.opened


CLASSES = [ServingClassConfig("P0", 0, 200.0, 0.5, 64), ServingClassConfig("P3", 3, 0.0, 0.5, 64, "delay")]


def arrival(i: int, t: float, cls: str, new: int, prompt_len: int = 8) -> Arrival:
    return Arrival(i, t, cls, np.zeros(prompt_len, dtype=np.int64), new)


def test_rows_complete_at_their_own_last_token_and_latency_counts_from_scheduled_time() -> None:
    clock = FakeClock()
    engine = SteppedEngine(clock, 0.01)
    cfg = ServingConfig(classes=CLASSES, max_batch=2, max_queue_delay_ms=5.0)
    report = run_open_loop(engine, cfg, [arrival(0, 0.0, "P0", 2), arrival(1, 0.001, "P3", 6)],
                           clock=clock, sleep=clock.sleep)
    assert engine.calls == [(2, 6)]  # one batch of both rows, run to the longest
    p0, p3 = report.by_class("P0"), report.by_class("P3")
    assert p0.e2e.p50 == pytest.approx(0.001e3 + 20.0)  # released at 1 ms (full), 2 steps
    assert p3.e2e.p50 == pytest.approx(60.0)  # 1 ms wait + 6 steps - its 1 ms later arrival
    assert report.occupancy == 1.0 and not report.saturated


@pytest.mark.parametrize("batching", ["group", "continuous"])
def test_under_a_sampling_workload_each_request_samples_seeded_by_its_id_and_greedy_ones_pass_nothing(
    batching: str,
) -> None:
    clock = FakeClock()
    engine = StreamingEngine(clock, 0.01)
    cfg = ServingConfig(classes=CLASSES, max_batch=1, max_queue_delay_ms=0.0, batching=batching)
    arrivals = [arrival(i, 0.05 * i, "P0", 2) for i in (3, 4)]
    run_open_loop(engine, cfg, arrivals, clock=clock, sleep=clock.sleep)
    assert engine.sampling == [None, None]

    engine.sampling.clear()
    run_open_loop(engine, cfg, arrivals, clock=clock, sleep=clock.sleep,
                  decoding=DecodingConfig(temperature=0.8, top_p=0.9, seed=100))
    # a group batch's rows draw their own tokens only (a row's draws); a stream's leave at their last token
    draws = None if batching == "continuous" else 2
    asked = engine.sampling if batching == "continuous" else [rows[0] for rows in engine.sampling]
    assert asked == [Sampling(0.8, 0.9, 0, 103, draws), Sampling(0.8, 0.9, 0, 104, draws)]


def test_a_capacity_probe_seeds_each_judged_request_by_its_place_at_every_rate() -> None:
    cfg = ServingConfig(classes=CLASSES, warmup_s=1.0, duration_s=2.0)
    for rate in (2.0, 5.0):
        arrivals = probe_arrivals(cfg, np.arange(200), [8], [4], rate)
        judged = [a for a in arrivals if a.time_s >= cfg.warmup_s]
        warm = arrivals[: len(arrivals) - len(judged)]
        assert [a.draw for a in judged] == list(range(len(judged)))  # not their ids, shifted by the warm-up's count
        assert all(a.draw >= WARMUP_STREAM << 32 for a in warm)


def test_the_capacity_searchs_system_passes_the_workloads_decoding_to_every_request() -> None:
    engine = SteppedEngine(FakeClock(), 0.001)
    cfg = ServingConfig(classes=CLASSES, max_batch=1, max_queue_delay_ms=0.0, warmup_s=0.3, duration_s=0.5)
    rate = 10.0
    judged = round(rate * cfg.duration_s)
    warm = len(probe_arrivals(cfg, np.arange(200), [8], [2], rate)) - judged
    engine_system(engine, cfg, np.arange(200), [8], [2], DecodingConfig(temperature=0.5, seed=7))(rate)  # 0.8 s
    seeds = sorted(rows[0].seed for rows in engine.sampling)
    assert warm > 0 and len(seeds) == warm + judged
    assert seeds[:judged] == [7 + k for k in range(judged)]  # judged request k draws with seed + k, whatever came before
    assert all(seed >= 7 + (WARMUP_STREAM << 32) for seed in seeds[judged:])


def test_a_shorter_prompt_shares_the_leads_batch_padded_after_it() -> None:
    clock = FakeClock()
    engine = SteppedEngine(clock, 0.01)
    cfg = ServingConfig(classes=CLASSES, max_batch=2, max_queue_delay_ms=5.0, mix_lengths=True)
    lead = Arrival(0, 0.0, "P0", np.arange(1, 6, dtype=np.int64), 2)
    short = Arrival(1, 0.001, "P3", np.array([7, 8, 9], dtype=np.int64), 2)
    run_open_loop(engine, cfg, [lead, short], clock=clock, sleep=clock.sleep)
    ((ids, lengths),) = engine.inputs
    assert lengths == [5, 3]
    np.testing.assert_array_equal(ids, [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]])


@pytest.mark.parametrize("where", ["config", "engine", "undeclared"])
def test_equal_lengths_only_where_the_config_or_the_loaded_engine_says_so(where: str) -> None:
    clock = FakeClock()
    engine = SteppedEngine(clock, 0.01)
    cfg = ServingConfig(classes=CLASSES, max_batch=2, max_queue_delay_ms=5.0, mix_lengths=where != "config")
    if where == "engine":
        engine.mixed_lengths = False
    if where == "undeclared":  # an engine that says nothing (a test double, a new engine) is not assumed able
        engine.mixed_lengths = Engine.mixed_lengths
    arrivals = [arrival(0, 0.0, "P0", 2, prompt_len=5), arrival(1, 0.001, "P3", 2, prompt_len=3)]
    run_open_loop(engine, cfg, arrivals, clock=clock, sleep=clock.sleep)
    assert [(ids.shape, lengths) for ids, lengths in engine.inputs] == [((1, 5), None), ((1, 3), None)]


@pytest.mark.parametrize("batching", ["group", "continuous"])
def test_with_continuous_batching_an_urgent_request_joins_the_running_batch_at_the_next_step(batching: str) -> None:
    clock = FakeClock()
    engine = StreamingEngine(clock, 0.01)
    cfg = ServingConfig(classes=CLASSES, max_batch=2, max_queue_delay_ms=0.0, batching=batching)
    arrivals = [arrival(0, 0.0, "P3", 10, prompt_len=64), arrival(1, 0.025, "P0", 2, prompt_len=8)]
    report = run_open_loop(engine, cfg, arrivals, clock=clock, sleep=clock.sleep)
    p0, p3 = report.by_class("P0"), report.by_class("P3")
    if batching == "group":  # P0 waits for P3's 10 steps (0.1 s), then runs its own 2
        assert p0.e2e.p50 == pytest.approx(120.0 - 25.0) and p3.e2e.p50 == pytest.approx(100.0)
        return
    # P3 joins (prefill 0.01 s, token 1) and steps at 0.02 and 0.03; P0 joins at 0.03 (token 1 at 0.04), and its
    # second token comes with the step at 0.05, where it leaves; P3 steps on alone to its 10th token.
    assert p0.e2e.p50 == pytest.approx(50.0 - 25.0) and p0.ttft.p50 == pytest.approx(40.0 - 25.0)
    assert p3.e2e.p50 == pytest.approx(110.0)
    assert [len(rows) for rows in engine.opened.steps] == [1, 1, 2, 1, 1, 1, 1, 1, 1]
    assert report.batches == 9 and report.mean_batch_rows == pytest.approx(10 / 9)


def test_joiners_prefilled_one_after_another_each_wait_in_the_queue_until_their_own_prefill() -> None:
    """Four P0s arrive at once into an empty stream; each prefill takes 50 ms. The fourth waited 150 ms behind the
    others' prefills: queue times 0, 50, 100, 150 ms (they were all stamped 0), TTFTs 50, 100, 150, 200 ms."""
    clock = FakeClock()
    engine = StreamingEngine(clock, 0.05)
    cfg = ServingConfig(classes=CLASSES, max_batch=4, batching="continuous")

    report = run_open_loop(engine, cfg, [arrival(i, 0.0, "P0", 1) for i in range(4)], clock=clock, sleep=clock.sleep)

    p0 = report.by_class("P0")
    assert (p0.queue.p50, p0.ttft.p50) == (pytest.approx(75.0), pytest.approx(125.0))


def test_the_server_worker_stamps_each_joiners_start_at_its_own_prefill() -> None:
    clock = FakeClock()
    scheduler = Scheduler(CLASSES, max_batch=4, continuous=True)
    worker = ServingWorker(StreamingEngine(clock, 0.05), scheduler, clock=clock)
    starts: list[float] = []
    done = threading.Event()

    class Sink:
        def started(self, t: float) -> None:
            starts.append(t)

        def token(self, index: int, token: int, t: float) -> bool:
            return True

        def finished(self, error: BaseException | None) -> None:
            if len(starts) == 3:
                done.set()

    for i in range(3):
        worker.submit(ServingRequest(i, "P0", 8, 1, 0.0, np.zeros(8, dtype=np.int64)), Sink())
    worker.start()
    assert done.wait(10) and worker.close(10)

    assert starts == pytest.approx([0.0, 0.05, 0.1])


def request(i: int, prompt_len: int, new: int, cls: str = "P0") -> ServingRequest:
    return ServingRequest(i, cls, prompt_len, new, 0.0, np.zeros(prompt_len, dtype=np.int64))


@pytest.mark.parametrize("chunk", [0, 16])
def test_a_long_prompt_prefilled_in_parts_holds_the_running_row_one_part_at_a_time(chunk: int) -> None:
    """A row decodes (10 ms a step) when a 64-token prompt joins (1 ms a token). Whole, its prefill holds the row's
    next token 64 ms; in parts of 16, 16 ms at a time, and the joiner's first token comes 3 steps later."""
    clock = FakeClock()
    times: dict[int, list[float]] = {0: [], 1: []}
    starts: dict[int, float] = {}

    def on_token(r: ServingRequest, index: int, token: int, t: float) -> bool:
        times[r.id].append(t)
        return True

    batch = ContinuousBatch(PartingEngine(clock, 0.01, 0.001), 4, clock, on_token,
                            on_start=lambda r, t: starts.setdefault(r.id, t), prefill_chunk=chunk)
    batch.join([request(0, 4, 12)])
    batch.step()
    batch.join([request(1, 64, 2)])
    while batch.rows:
        batch.step()
    gaps = np.diff(times[0])
    assert gaps.max() == pytest.approx(0.01 + (0.016 if chunk else 0.064))
    first_token = times[1][0] - starts[1]
    assert first_token == pytest.approx(0.064 + (3 * 0.01 if chunk else 0.0))
    assert times[0][-1] == pytest.approx(0.004 + 11 * 0.01 + 0.064)  # the same work in all, only spread out


def test_joiners_prefilled_in_parts_go_one_after_another_each_starting_at_its_own_first_part() -> None:
    clock = FakeClock()
    starts: dict[int, float] = {}
    engine = PartingEngine(clock, 0.01, 0.001)
    batch = ContinuousBatch(engine, 4, clock, lambda r, i, tok, t: True,
                            on_start=lambda r, t: starts.setdefault(r.id, t), prefill_chunk=8)
    batch.join([request(0, 16, 1), request(1, 8, 1)])
    assert batch.rows == 2 and batch.room == 2  # prefilling requests take their rows already
    while batch.rows:
        batch.step()
    assert engine.opened.parts == [(0, 8), (0, 8), (1, 8)]
    assert starts == {0: 0.0, 1: pytest.approx(0.016)}


def test_short_prompts_share_a_steps_tokens_and_the_most_urgent_prompt_takes_them_first() -> None:
    clock = FakeClock()
    engine = PartingEngine(clock, 0.01, 0.001)
    order = {"P0": 0, "P3": 3}
    batch = ContinuousBatch(engine, 4, clock, lambda r, i, tok, t: True, prefill_chunk=8,
                            urgency=lambda r, now: order[r.cls])
    batch.join([request(0, 20, 1, "P3"), request(1, 5, 1), request(2, 6, 1)])
    batch.step()
    assert engine.opened.parts == [(1, 5), (2, 3)]  # the P0s, in the order they joined, before the older P3
    while batch.rows:
        batch.step()
    assert engine.opened.parts == [(1, 5), (2, 3), (2, 3), (0, 5), (0, 8), (0, 7)]


def test_a_prompt_that_waited_the_starvation_bound_takes_the_parts_before_more_urgent_ones() -> None:
    clock = FakeClock()
    engine = PartingEngine(clock, 0.01, 0.001)
    scheduler = Scheduler(CLASSES, max_batch=4, continuous=True, starvation_s=0.02)
    batch = ContinuousBatch(engine, 4, clock, lambda r, i, tok, t: True, prefill_chunk=8, urgency=scheduler.urgency)
    batch.join([request(0, 40, 1, "P3")])  # sent at 0
    batch.step()
    batch.join([ServingRequest(1, "P0", 40, 1, clock.t, np.zeros(40, dtype=np.int64))])  # sent at 8 ms
    while batch.rows:
        batch.step()
    # P0 takes the parts until P3 has waited 20 ms (at 24 ms); from 28 ms both have, and the first joined goes on
    assert engine.opened.parts == [(0, 8), (1, 8), (1, 8)] + [(0, 8)] * 4 + [(1, 8)] * 3


def test_a_failed_part_loses_its_own_request_only() -> None:
    clock = FakeClock()
    engine = PartingEngine(clock, 0.01, 0.001, failing={1})
    tokens: dict[int, int] = {0: 0, 2: 0}

    def on_token(r: ServingRequest, index: int, token: int, t: float) -> bool:
        tokens[r.id] += 1
        return True

    batch = ContinuousBatch(engine, 4, clock, on_token, prefill_chunk=8)
    batch.join([request(0, 8, 4), request(1, 16, 2), request(2, 8, 2)])
    batch.step()  # 0's prompt, and its second token
    batch.step()  # 1's first part, and 0's third token
    with pytest.raises(RowFailed, match="request 1: out of memory") as failed:
        batch.step()
    assert failed.value.request.id == 1 and batch.rows == 2 and engine.opened.left_over == {2: 8}
    while batch.rows:
        batch.step()
    assert tokens == {0: 4, 2: 2}


def test_the_server_worker_answers_a_failed_part_to_its_own_client_and_serves_the_others() -> None:
    clock = FakeClock()
    worker = ServingWorker(PartingEngine(clock, 0.01, 0.001, failing={1}), Scheduler(CLASSES, max_batch=4,
                           continuous=True), clock=clock, prefill_chunk=8)
    ended: dict[int, BaseException | None] = {}
    done = threading.Event()

    class Sink:
        def __init__(self, i: int) -> None:
            self.i = i

        def started(self, t: float) -> None:
            pass

        def token(self, index: int, token: int, t: float) -> bool:
            return True

        def finished(self, error: BaseException | None) -> None:
            ended[self.i] = error
            if len(ended) == 3:
                done.set()

    for i, length in enumerate((8, 16, 8)):
        worker.submit(request(i, length, 3), Sink(i))
    worker.start()
    assert done.wait(10) and worker.close(10)
    assert ended[0] is None and ended[2] is None and str(ended[1]) == "out of memory"


def test_a_request_cancelled_mid_prefill_leaves_the_stream_before_its_next_part() -> None:
    clock = FakeClock()
    engine = PartingEngine(clock, 0.01, 0.001)
    worker = ServingWorker(engine, Scheduler(CLASSES, max_batch=4, continuous=True), clock=clock, prefill_chunk=8)
    ended: list[tuple[int, BaseException | None]] = []
    done = threading.Event()

    class Sink:
        def __init__(self, i: int) -> None:
            self.i = i

        def started(self, t: float) -> None:  # its client goes away as its first part starts
            if self.i == 0:
                assert not worker.cancel(0)  # no longer waiting: it leaves the stream instead

        def token(self, index: int, token: int, t: float) -> bool:
            return True

        def finished(self, error: BaseException | None) -> None:
            ended.append((self.i, error))
            if len(ended) == 2:
                done.set()

    worker.submit(request(0, 64, 3), Sink(0))
    worker.submit(request(1, 8, 3, "P3"), Sink(1))
    worker.start()
    assert done.wait(10) and worker.close(10)
    assert sorted(ended) == [(0, None), (1, None)]  # each told once
    assert engine.opened.parts == [(0, 8), (1, 8)]  # 0's other 56 prompt tokens never ran
    assert engine.opened.left_over == {}


def test_a_run_saturates_at_a_lag_counted_in_the_largest_deadline_on_a_first_or_last_token() -> None:
    from autoopt.serving.runner import saturation_lag_s

    streaming = [ServingClassConfig("P0", 0, ttft_slo_ms=300.0, itl_slo_ms=40.0), ServingClassConfig("P3", 3)]
    assert saturation_lag_s(ServingConfig(classes=CLASSES)) == pytest.approx(10 * 0.2)
    assert saturation_lag_s(ServingConfig(classes=streaming)) == pytest.approx(10 * 0.3)
    assert saturation_lag_s(ServingConfig(classes=[ServingClassConfig("P3", 3, itl_slo_ms=40.0)])) == 10 * 1.0


def test_an_open_loop_run_prefills_in_the_parts_its_config_asks_for() -> None:
    clock = FakeClock()
    engine = PartingEngine(clock, 0.01, 0.001)
    cfg = ServingConfig(classes=CLASSES, max_batch=2, batching="continuous", prefill_chunk=5)
    report = run_open_loop(engine, cfg, [arrival(0, 0.0, "P0", 3, 12), arrival(1, 0.0, "P3", 3, 4)],
                           clock=clock, sleep=clock.sleep)
    assert engine.opened.parts == [(0, 5), (0, 5), (0, 2), (1, 3), (1, 1)]  # P0's first, 5 tokens a step
    assert report.overall.completed == 2
    # the first step decoded no row (a part alone): not a batch of 0 rows
    assert report.batches == len(engine.opened.steps) and 0 not in [len(rows) for rows in engine.opened.steps]


def test_continuous_batching_on_an_engine_without_a_stream_is_refused_in_one_line() -> None:
    clock = FakeClock()
    cfg = ServingConfig(classes=CLASSES, batching="continuous")
    with pytest.raises(ValueError, match="engine stepped as loaded has no continuous batching"):
        run_open_loop(SteppedEngine(clock, 0.01), cfg, [arrival(0, 0.0, "P0", 2)], clock=clock, sleep=clock.sleep)


def test_overload_is_detected_and_the_run_stops_early_with_misses_counted() -> None:
    clock = FakeClock()
    cfg = ServingConfig(classes=CLASSES, max_batch=1, saturation_lag_factor=5.0, max_requests=400, duration_s=100)
    arrivals = make_arrivals(cfg, np.arange(100), [8], [10], rate_rps=50.0)  # 50 rps x 0.1 s per request
    report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=50.0, clock=clock, sleep=clock.sleep)
    assert report.saturated and "lags" in report.saturation_reason
    assert report.duration_s < 8.0 and report.overall.offered < len(arrivals)
    assert report.overall.unfinished > 0 and report.by_class("P0").attainment < 0.5


def test_strict_priority_keeps_p0_fast_while_p3_waits_under_overload() -> None:
    clock = FakeClock()
    cfg = ServingConfig(classes=CLASSES, max_batch=1, max_requests=60, duration_s=100)
    arrivals = make_arrivals(cfg, np.arange(100), [8], [5], rate_rps=25.0)  # 1.25x what 50 ms/request serves
    report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=25.0, clock=clock, sleep=clock.sleep)
    p0, p3 = report.by_class("P0"), report.by_class("P3")
    assert p0.e2e.p99 is not None and p3.e2e.p99 is not None
    assert p0.e2e.p99 < 200.0 < p3.e2e.p99


@pytest.mark.slow
@pytest.mark.parametrize(("engine_name", "batching", "chunk"),
                         [("torch", "group", 0), ("torch", "continuous", 0), ("torch_compiled", "continuous", 0),
                          ("ort", "continuous", 0), ("ort", "continuous", 8)])
def test_real_open_loop_run_on_the_trained_builtin_model(
    engine_name: str, batching: str, chunk: int, cache_dir: Path
) -> None:
    from autoopt.config.schema import ModelConfig
    from autoopt.engines.base import RuntimeOptions
    from autoopt.models.source import resolve_model
    from autoopt.serving.runner import warm_up
    from tests.engines.decoding import built_engine

    folder = resolve_model(ModelConfig(), cache_dir).path
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=64, max_batch=4)
    knobs = {"compile_mode": "none"} if engine_name == "torch_compiled" else {}
    engine = built_engine(engine_name, folder, cache_dir, runtime, **knobs)
    tokens = np.arange(3, 400, dtype=np.int64)
    cfg = ServingConfig(rate_rps=4.0, max_requests=12, duration_s=6.0, max_batch=4, max_queue_delay_ms=20.0,
                        batching=batching, prefill_chunk=chunk)
    warm_up(engine, tokens, [16, 32], cfg.max_batch, stream=batching == "continuous", prefill_chunk=chunk)
    arrivals = make_arrivals(cfg, tokens, [16, 32], [4, 8])
    report = run_open_loop(engine, cfg, arrivals)
    engine.close()
    overall = report.overall
    assert overall.offered == 12 and overall.completed + overall.rejected + overall.unfinished == 12
    assert overall.completed == 12 and overall.output_tokens == sum(a.max_new_tokens for a in arrivals)
    assert overall.completed > 0 and report.batches > 0 and 0 < report.occupancy <= 1
    assert overall.e2e.p50 is not None and overall.ttft.p50 is not None and overall.ttft.p50 <= overall.e2e.p50
    assert report.output_tokens_per_s > 0


def test_a_rate_beyond_what_the_engine_completes_is_not_sustained_though_its_backlog_drains_within_the_slo() -> None:
    from autoopt.serving.capacity import violations

    # One request takes 0.1 s (batch 1): the engine completes 10 requests/s. Offered 11/s for 6 s, the backlog
    # of about 0.6 s clears within the 2 s SLO, so only the work offered against the time it had shows it.
    classes = [ServingClassConfig("P0", 0, 2000.0, 1.0, 256)]
    cfg = ServingConfig(classes=classes, max_batch=1, max_requests=10_000, duration_s=6.0)
    clock = FakeClock()
    arrivals = make_arrivals(cfg, np.arange(100), [8], [10], rate_rps=11.0)
    report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=11.0, clock=clock, sleep=clock.sleep)

    assert not report.saturated and report.drain_s < 2.0
    assert report.busy_s == pytest.approx(report.overall.completed * 0.1)
    assert report.utilization > 1.0
    assert [v for v in violations(report, 0.99) if v.startswith("not sustained")] == [
        f"not sustained: the engine was busy {report.busy_s:.2f}s running batches, {report.utilization:.1%} of the "
        "arrival window: it completes less than the offered rate"]

    clock = FakeClock()  # at 8/s the same engine keeps up
    arrivals = make_arrivals(cfg, np.arange(100), [8], [10], rate_rps=8.0)
    report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=8.0, clock=clock, sleep=clock.sleep)
    assert 0.6 < report.utilization < 1.0 and violations(report, 0.99) == []


@pytest.mark.parametrize(("arrival", "burstiness"), [("poisson", 1.0), ("gamma", 3.0)])
def test_utilization_is_the_work_offered_over_the_window_it_was_offered_in(arrival: str, burstiness: float) -> None:
    # 0.1 s per request at 2 requests/s: 20 % of the window, however the bursty gaps fall.
    classes = [ServingClassConfig("P0", 0, 60_000.0, 1.0, 256)]
    for seed in range(4):
        cfg = ServingConfig(classes=classes, max_batch=1, max_requests=10_000, duration_s=6.0, arrival=arrival,
                            burstiness=burstiness, seed=seed)
        clock = FakeClock()
        arrivals = make_arrivals(cfg, np.arange(100), [8], [10], rate_rps=2.0)
        report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=2.0, clock=clock, sleep=clock.sleep)

        assert report.utilization == pytest.approx(0.2)


def test_warm_up_requests_load_the_engine_but_only_later_ones_are_judged() -> None:
    # At 10/s, five requests of 0.2 s each (batch 1) arrive in a 0.5 s warm-up; the judged one queues behind them.
    classes = [ServingClassConfig("P0", 0, 2000.0, 1.0, 64)]
    cfg = ServingConfig(classes=classes, max_batch=1)
    clock = FakeClock()
    arrivals = [arrival(i, i * 0.1, "P0", 10) for i in range(5)] + [arrival(5, 0.5, "P0", 10)]
    report = run_open_loop(SteppedEngine(clock, 0.02), cfg, arrivals, rate_rps=10.0, clock=clock, sleep=clock.sleep,
                           judged_from_s=0.5)

    assert report.overall.offered == report.overall.completed == 1 and report.warmup_offered == 5
    assert report.overall.e2e.p50 == pytest.approx(700.0)  # waited 0.5 s behind the warm-up's work, then ran 0.2 s
    assert report.batches == 3 and report.duration_s == pytest.approx(0.7)  # the batches started from 0.5 s on
    # 1.2 s of work in the 0.5 s warm-up plus the judged request's 0.1 s window
    assert report.busy_s == pytest.approx(1.2) and report.utilization == pytest.approx(2.0)


def test_a_capacity_probe_offers_its_warm_up_before_the_judged_requests() -> None:
    from autoopt.serving.runner import engine_system, probe_arrivals

    cfg = ServingConfig(classes=[ServingClassConfig("P0", 0, 60_000.0, 1.0, 256)], max_batch=4, duration_s=1.0,
                        warmup_s=0.5, max_requests=3)
    tokens = np.arange(100)
    arrivals = probe_arrivals(cfg, tokens, [8], [2], 40.0)
    warm = sum(a.time_s < 0.5 for a in arrivals)
    assert len(arrivals) == warm + 40 and len({a.id for a in arrivals}) == len(arrivals)  # not capped by max_requests
    assert 0 < warm != 20 and all(a.time_s < 0.5 for a in arrivals[:warm])  # a free count, ahead of the judged ones
    no_warm_up = probe_arrivals(replace(cfg, warmup_s=0.0), tokens, [8], [2], 40.0)
    assert [(a.cls, a.time_s + 0.5) for a in no_warm_up] == [(a.cls, a.time_s) for a in arrivals[warm:]]  # exactly 40

    report = engine_system(SteppedEngine(FakeClock(), 0.0), cfg, tokens, [8], [2])(40.0)
    assert report.warmup_offered == warm and report.overall.offered == 40 and report.warmup_s == 0.5


def test_near_saturation_a_probe_from_an_empty_queue_understates_the_latency_its_rate_brings() -> None:
    """M/D/1 at 95 % busy (0.1 s per request, batch 1): its queue grows for far longer than a probe lasts, so
    the requests sent after a warm-up wait longer than those of a probe that starts empty, seed after seed."""
    from autoopt.serving.runner import probe_arrivals

    classes = [ServingClassConfig("P0", 0, 60_000.0, 1.0, 10_000)]

    def p99(warmup_s: float, seed: int) -> float:
        cfg = ServingConfig(classes=classes, max_batch=1, duration_s=6.0, warmup_s=warmup_s, seed=seed,
                            saturation_queue=10_000, saturation_lag_factor=100.0)
        clock = FakeClock()
        arrivals = probe_arrivals(cfg, np.arange(100), [8], [10], 9.5)
        report = run_open_loop(SteppedEngine(clock, 0.01), cfg, arrivals, rate_rps=9.5, clock=clock, sleep=clock.sleep,
                               judged_from_s=warmup_s)
        assert report.overall.e2e.p99 is not None
        return report.overall.e2e.p99

    cold = [p99(0.0, seed) for seed in range(20)]
    warm = [p99(2.0, seed) for seed in range(20)]
    assert np.mean(warm) > 1.05 * np.mean(cold)


def test_a_stream_warm_up_fits_a_static_cache_sized_for_the_workload(tiny_model: Path) -> None:
    """torch_compiled's cache holds prompt + new tokens of the longest request (here 16 + 4); the warm-up's rows
    leave after their step, so eight of them fit (kept on, each join would have widened the cache by two)."""
    from autoopt.config.schema import CandidateConfig
    from autoopt.engines.base import RuntimeOptions
    from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
    from autoopt.serving.runner import warm_up

    runtime = RuntimeOptions(device="cpu", threads=1, max_length=20, max_batch=8)
    engine = TorchCompiledEngine.load(tiny_model, CandidateConfig(engine="torch_compiled", compile_mode="none"), runtime)
    warm_up(engine, np.arange(3, 40, dtype=np.int64), [12, 16], 8, stream=True)
    engine.close()
