"""The benchmark loop's own logic, driven by a fake engine on a fake clock: token counting, burn-in,
complete cycles and the stopping rule. Real engines are timed in the measure tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoopt.bench.latency import run_timed, time_request, warm_up
from autoopt.bench.requests import Request, make_requests
from autoopt.config.schema import BenchConfig, CandidateConfig, DecodingConfig, bench_problem
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.sampling import Sampling
from autoopt.result import DEFINITIONS

PREFILL_S = 0.010
STEP_S = 0.001


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine(Engine):
    """Yields `max_new_tokens + extra` tokens, advancing the fake clock by a fixed prefill and step cost."""

    name = "fake"

    def __init__(self, clock: FakeClock, extra: int = 0, dtype: type = np.int64, column: bool = False) -> None:
        self.clock = clock
        self.extra = extra
        self.dtype = dtype
        self.column = column
        self.calls: list[tuple[int, int, int]] = []  # (batch, prompt_len, max_new_tokens) in call order

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> FakeEngine:
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        self.calls.append((*input_ids.shape, max_new_tokens))
        batch = input_ids.shape[0]
        for i in range(max_new_tokens + self.extra):
            self.clock.now += PREFILL_S if i == 0 else STEP_S
            token = np.zeros((batch, 1) if self.column else (batch,), dtype=self.dtype)
            yield token

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SamplingEngine(FakeEngine):
    """FakeEngine that records the `sampling` each call gets."""

    samples = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.sampling: list[list[Sampling] | None] = []

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, sampling=None) -> Iterator[np.ndarray]:
        self.sampling.append(sampling)
        return super().generate(input_ids, max_new_tokens)


def test_a_sampling_workloads_rows_sample_seeded_by_their_place_through_warm_up_and_timed_runs() -> None:
    decoding = DecodingConfig(temperature=0.7, top_k=40, seed=10)
    requests = make_requests(np.arange(500), [8, 16], [4], 2, decoding)
    assert [[(s.temperature, s.top_k, s.seed) for s in r.sampling] for r in requests] == [
        [(0.7, 40, 10), (0.7, 40, 11)], [(0.7, 40, 12), (0.7, 40, 13)]]
    assert make_requests(np.arange(500), [8], [4], 2, DecodingConfig(temperature=0.7, top_k=1))[0].sampling is None

    engine = SamplingEngine(FakeClock())
    warm_up(engine, requests, "shapes")
    run_timed(engine, requests, _bench(min_runs=2))
    assert engine.sampling and all(s == list(r.sampling) for s, r in zip(engine.sampling, requests * 99, strict=False))


def _requests() -> list[Request]:
    return [Request(np.zeros((2, p), dtype=np.int64), n) for p in (8, 16) for n in (4,)] + [
        Request(np.zeros((2, 32), dtype=np.int64), 8)
    ]


def _bench(**overrides: float) -> BenchConfig:
    return replace(BenchConfig(warmup_runs=1, min_runs=1, min_seconds=0.0, max_runs=200, max_seconds=120.0), **overrides)


def test_time_request_counts_yielded_tokens_and_times_them() -> None:
    clock = FakeClock()

    timing = time_request(FakeEngine(clock), Request(np.zeros((3, 5), dtype=np.int64), 6), clock)

    assert timing.new_tokens == 6 and timing.tokens == 18
    assert timing.shape == (5, 6, 3)
    assert timing.ttft_s == pytest.approx(PREFILL_S)
    assert timing.e2e_s == pytest.approx(PREFILL_S + 5 * STEP_S)
    assert timing.tpot_s == pytest.approx(STEP_S)


def test_tpot_is_one_decode_step_of_the_whole_batch_and_its_definition_says_so() -> None:
    clock = FakeClock()

    timing = time_request(FakeEngine(clock), Request(np.zeros((4, 5), dtype=np.int64), 6), clock)

    assert timing.tpot_s == pytest.approx(STEP_S)  # not STEP_S / 4: the four rows advance together
    assert "per row" in DEFINITIONS["speed.tpot_ms"] and "batch" in DEFINITIONS["speed.tpot_ms"]


def test_too_few_tokens_is_an_error_naming_expected_and_counted() -> None:
    clock = FakeClock()

    with pytest.raises(RuntimeError) as err:
        time_request(FakeEngine(clock, extra=-2), Request(np.zeros((1, 5), dtype=np.int64), 6), clock)

    assert "yielded 4 tokens for max_new_tokens=6" in str(err.value)
    assert "\n" not in str(err.value)


def test_too_many_tokens_is_an_error_and_stops_the_engine() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock, extra=10**9)  # would never end if consumed

    with pytest.raises(RuntimeError, match="more than max_new_tokens=6"):
        time_request(engine, Request(np.zeros((1, 5), dtype=np.int64), 6), clock)


@pytest.mark.parametrize(("dtype", "column", "got"), [(np.int32, False, "int32"), (np.int64, True, "shape (2, 1)")])
def test_a_step_of_wrong_dtype_or_shape_is_an_error(dtype: type, column: bool, got: str) -> None:
    clock = FakeClock()

    with pytest.raises(RuntimeError) as err:
        time_request(FakeEngine(clock, dtype=dtype, column=column), Request(np.zeros((2, 5), dtype=np.int64), 3))

    assert got in str(err.value) and "int64 array of shape (2,)" in str(err.value)
    assert "\n" not in str(err.value)


def test_burn_in_runs_every_shape_before_the_timed_loop() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    requests = _requests()

    samples = run_timed(engine, requests, _bench(warmup_runs=2, min_runs=1), clock)

    shapes = [r.shape for r in requests]
    assert engine.calls[:6] == shapes * 2  # two full untimed passes
    assert engine.calls[6:] == shapes * samples.cycles
    assert samples.burn_in_s == pytest.approx(2 * sum(PREFILL_S + (r.max_new_tokens - 1) * STEP_S for r in requests))


def test_the_cpu_share_other_processes_took_is_taken_over_the_timed_cycles_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    import autoopt.bench.latency as latency
    from autoopt.bench.contention import OtherLoad

    clock = FakeClock()
    engine = FakeEngine(clock)
    window: list[int] = []

    @contextlib.contextmanager
    def watched():  # the real one reads /proc/stat; here: which engine calls fall inside the block
        load = OtherLoad()
        window.append(len(engine.calls))
        yield load
        window.append(len(engine.calls))
        load.share = 0.4

    monkeypatch.setattr(latency, "other_cpu_share", watched)
    requests = _requests()

    samples = run_timed(engine, requests, _bench(warmup_runs=2, min_runs=1), clock)

    assert window == [2 * len(requests), len(engine.calls)]  # after the two burn-in passes, to the last timed call
    assert samples.other_cpu_share == 0.4


def test_timed_loop_runs_complete_cycles_until_min_runs() -> None:
    clock = FakeClock()

    samples = run_timed(FakeEngine(clock), _requests(), _bench(min_runs=4), clock)

    assert len(samples.timings) == 6 and samples.cycles == 2
    assert {t.shape for t in samples.timings[-3:]} == {(8, 4, 2), (16, 4, 2), (32, 8, 2)}  # largest kept


def test_timed_loop_runs_complete_cycles_until_min_seconds() -> None:
    clock = FakeClock()
    cycle_s = sum(PREFILL_S + (r.max_new_tokens - 1) * STEP_S for r in _requests())

    samples = run_timed(FakeEngine(clock), _requests(), _bench(min_seconds=2.5 * cycle_s), clock)

    assert samples.cycles == 3
    assert samples.seconds == pytest.approx(3 * cycle_s)
    assert samples.output_tokens_per_s == pytest.approx(3 * 2 * (4 + 4 + 8) / (3 * cycle_s))


def test_max_seconds_stops_at_a_cycle_boundary_after_at_least_one_cycle() -> None:
    clock = FakeClock()

    samples = run_timed(FakeEngine(clock), _requests(), _bench(min_runs=100, max_seconds=1e-6), clock)

    assert samples.cycles == 1 and len(samples.timings) == 3


def test_max_runs_is_never_passed_after_the_first_cycle() -> None:
    clock = FakeClock()

    capped = run_timed(FakeEngine(clock), _requests(), _bench(min_runs=7, max_runs=8, min_seconds=100.0), clock)
    tiny = run_timed(FakeEngine(clock), _requests(), _bench(min_runs=1, max_runs=2, min_seconds=100.0), clock)

    assert len(capped.timings) == 6  # a third cycle would make 9 > 8
    assert len(tiny.timings) == 3  # the first cycle always runs whole


def test_default_bench_settings_are_valid() -> None:
    assert bench_problem(BenchConfig()) is None


def test_every_problem_is_named_on_one_line() -> None:
    problem = bench_problem(BenchConfig(warmup_runs=0, min_runs=0))

    assert problem is not None and "bench.warmup_runs=0" in problem and "bench.min_runs=0" in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"warmup_runs": 0}, "bench.warmup_runs=0"),
        ({"min_runs": 0}, "bench.min_runs=0"),
        ({"min_seconds": -1.0}, "bench.min_seconds=-1.0"),
        ({"min_seconds": 10.0, "max_seconds": 5.0}, "bench.max_seconds=5.0"),
        ({"min_runs": 10, "max_runs": 5}, "bench.max_runs=5"),
    ],
)
def test_invalid_bench_settings_are_named_with_a_fix(overrides: dict[str, float], key: str) -> None:
    problem = bench_problem(replace(BenchConfig(), **overrides))

    assert problem is not None and key in problem and "\n" not in problem


def test_run_timed_refuses_invalid_settings_before_any_work() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)

    with pytest.raises(ValueError, match="bench.warmup_runs=0"):
        run_timed(engine, _requests(), _bench(warmup_runs=0), clock)
    assert engine.calls == []
