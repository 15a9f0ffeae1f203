from __future__ import annotations

from dataclasses import replace

import pytest

from autoopt.config.serving import ServingClassConfig
from autoopt.serving.capacity import cost_at_load, find_capacity, next_up, replicas_needed, violations
from autoopt.serving.metrics import DONE, RequestRecord, ServingReport, summarize

CLASSES = [ServingClassConfig("P0", 0, 200.0, 0.5, 8), ServingClassConfig("P3", 3, 0.0, 0.5, 8)]


def fake_system(true_capacity: float, calls: list[float]):
    """A system whose P0 latency grows with load and breaks its 200 ms SLO above `true_capacity`."""

    def system(rate: float) -> ServingReport:
        calls.append(rate)
        e2e = 0.1 if rate <= true_capacity else 0.5
        records = [RequestRecord(i, "P0", float(i), DONE, i, i + 0.01, i + e2e, 10) for i in range(20)]
        return summarize(records, CLASSES, [1] * 20, max_batch=1, duration_s=20.0, rate_rps=rate)

    return system


@pytest.mark.parametrize("start", [0.5, 3.0, 100.0])
def test_doubling_then_bisection_brackets_capacity_within_tolerance(start: float) -> None:
    calls: list[float] = []
    cap = find_capacity(fake_system(7.3, calls), start_rps=start, tolerance=0.05)
    assert cap.converged and cap.rate_rps <= 7.3
    assert cap.rate_rps >= 7.3 * 0.95
    failing = min(p.rate_rps for p in cap.probes if not p.holds)
    assert (failing - cap.rate_rps) / failing <= 0.05
    assert len(calls) <= 16 and cap.report is not None and cap.report.rate_rps == cap.rate_rps


def test_no_rate_holds_gives_zero_capacity_and_a_clear_cost_error() -> None:
    cap = find_capacity(fake_system(0.0, []), start_rps=1.0, max_probes=6)
    assert cap.rate_rps == 0.0 and cap.report is None and not cap.converged
    with pytest.raises(ValueError, match="no probed rate held"):
        cost_at_load(cap, 10.0, 1.0, 10.0)


def test_violations_name_the_class_and_the_bound() -> None:
    report = fake_system(1.0, [])(2.0)
    assert violations(report, 0.99) == ["P0 e2e p99 500 ms > 200 ms", "P0 attainment 0.000 < 0.99"]
    assert violations(fake_system(1.0, [])(0.5), 0.99) == []


def test_violations_name_each_streaming_deadline_whose_p99_breaks() -> None:
    classes = [ServingClassConfig("P0", 0, 0.0, 0.5, 8, ttft_slo_ms=50.0, itl_slo_ms=20.0)]
    records = []
    for i in range(20):
        r = RequestRecord(i, "P0", float(i), DONE)
        for t in (0.04, 0.05, 0.06 + 0.02 * (i >= 10)):  # half the requests stall 30 ms
            r.token(i + t)
        records.append(r)
    report = summarize(records, classes, [1] * 20, max_batch=1, duration_s=20.0, rate_rps=1.0)
    assert violations(report, 0.5) == ["P0 longest ITL p99 30 ms > 20 ms"]
    assert violations(report, 0.9) == ["P0 longest ITL p99 30 ms > 20 ms", "P0 attainment 0.500 < 0.9"]
    late = summarize(records, [replace(classes[0], ttft_slo_ms=30.0, itl_slo_ms=0.0)], [1] * 20, max_batch=1,
                     duration_s=20.0, rate_rps=1.0)
    assert violations(late, 0.99) == ["P0 TTFT p99 40 ms > 30 ms", "P0 attainment 0.000 < 0.99"]
    none = summarize([RequestRecord(0, "P0", 0.0)], classes, [], max_batch=1, duration_s=1.0, rate_rps=1.0)
    assert "P0 TTFT p99 none completed > 50 ms" in violations(none, 0.99)


def test_replicas_and_cost_at_load() -> None:
    cap = find_capacity(fake_system(4.0, []), start_rps=4.0)
    assert cap.rate_rps == 4.0
    cost = cost_at_load(cap, peak_rate_rps=10.0, price_per_hour=2.0, tokens_per_request=10.0)
    assert cost.replicas == 3 and cost.usd_per_day == pytest.approx(3 * 2.0 * 24)
    assert cost.usd_per_million_tokens_at_capacity == pytest.approx(2.0 / (4.0 * 10 * 3600) * 1e6)
    assert cost.usd_per_million_tokens_at_peak == pytest.approx(6.0 / (10.0 * 10 * 3600) * 1e6)
    assert replicas_needed(8.0, 4.0) == 2 and replicas_needed(0.1, 4.0) == 1


def test_a_backlog_that_outlasts_the_largest_slo_is_not_a_sustained_rate() -> None:
    # P0 holds its deadline while best-effort P3 piles up and clears only 5 s after the last arrival.
    p0 = [RequestRecord(i, "P0", float(i), DONE, i, i + 0.01, i + 0.05, 10) for i in range(10)]
    p3 = [RequestRecord(10 + i, "P3", float(i), DONE, 9.0, 9.5, 14.0, 10) for i in range(10)]

    report = summarize(p0 + p3, CLASSES, [1] * 20, max_batch=1, duration_s=14.0, rate_rps=2.0, drain_s=5.0)

    assert violations(report, 0.99) == [
        "not sustained: the backlog took 5.00s to clear after the last arrival (> 0.20s, the latest a last token may "
        "come within its class's deadlines)"
    ]


def test_under_streaming_deadlines_the_drain_bound_is_the_latest_last_token_they_allow() -> None:
    from autoopt.serving.capacity import last_token_bound_ms

    stream = [ServingClassConfig("P0", 0, 0.0, 0.5, 8, ttft_slo_ms=300.0, itl_slo_ms=40.0),
              ServingClassConfig("P1", 1, 0.0, 0.5, 8, ttft_slo_ms=1000.0)]
    records = []
    for i in range(10):  # replies of 11 tokens: first at 100 ms, then 20 ms apart
        r = RequestRecord(i, "P0", float(i), DONE)
        for k in range(11):
            r.token(i + 0.1 + 0.02 * k)
        records.append(r)
    holds = summarize(records, stream, [1] * 10, max_batch=1, duration_s=10.0, rate_rps=1.0, drain_s=0.69)
    assert [last_token_bound_ms(c) for c in holds.classes] == [pytest.approx(300 + 10 * 40), None]
    assert violations(holds, 0.99) == []
    late = replace(holds, drain_s=0.71)  # past P0's 700 ms, where the best-effort bound (1 s) would let it hold
    assert violations(late, 0.99) == ["not sustained: the backlog took 0.71s to clear after the last arrival (> 0.70s, "
                                      "the latest a last token may come within its class's deadlines)"]


def test_a_probe_rate_so_low_that_no_request_arrived_does_not_hold() -> None:
    # Halving from a rate the engine cannot serve reaches rates where not one request arrives within
    # duration_s: nothing was served, so nothing held (and no cost per token can be derived from it).
    failing = fake_system(0.0, [])

    def system(rate: float) -> ServingReport:
        if rate < 1.0:
            return summarize([], CLASSES, [], max_batch=1, duration_s=6.0, rate_rps=rate)
        return failing(rate)

    cap = find_capacity(system, start_rps=8.0, max_probes=8)
    assert cap.rate_rps == 0.0 and cap.report is None
    assert "no request completed" in cap.probes[-1].why_not[0]


def saturating_system(throughput: float, calls: list[float]):
    """A system that meets every SLO but is busy rate / throughput of each run's arrival window."""

    def system(rate: float) -> ServingReport:
        calls.append(rate)
        records = [RequestRecord(i, "P0", float(i), DONE, i, i + 0.01, i + 0.1, 10) for i in range(20)]
        return summarize(records, CLASSES, [1] * 20, max_batch=1, duration_s=20.0 / rate + 0.1, rate_rps=rate,
                         drain_s=0.1, busy_s=20.0 / throughput)

    return system


def test_a_bracket_whose_failing_end_ran_over_is_narrowed_where_utilization_reaches_1() -> None:
    bracketed, interpolated = [], []
    find_capacity(saturating_system(7.3, bracketed), start_rps=4.0, tolerance=0.05, max_probes=2)
    cap = find_capacity(saturating_system(7.3, interpolated), start_rps=4.0, tolerance=0.05)

    assert bracketed == [4.0, 8.0]  # busy 55 % at 4 req/s: doubled (not more); then the bracket [4, 8]
    assert cap.converged and 7.3 * 0.95 <= cap.rate_rps <= 7.3 * (1 + 1e-9)
    assert len(interpolated) <= 4  # bisecting [4, 8] to 5 % takes 4 more probes; the crossing, at most 2


def test_a_probe_far_below_saturation_is_followed_by_a_jump_not_a_doubling() -> None:
    """At 1.5 req/s the system is busy 1.5/40 of the time: the next probe aims at half its saturation (at most
    8 times the rate), then doubles while the rate is within a factor 2 of that. Doubling alone would have
    probed 1.5, 3, 6, 12, 24, 48."""
    calls: list[float] = []
    cap = find_capacity(saturating_system(40.0, calls), start_rps=1.5, tolerance=0.05)

    assert calls[:4] == [1.5, 12.0, 24.0, 48.0]
    assert cap.converged and 40.0 * 0.95 <= cap.rate_rps <= 40.0 * (1 + 1e-9)


def test_next_up_doubles_without_a_utilization_and_stays_within_2x_and_8x() -> None:
    assert next_up(10.0, 0.0) == 20.0  # nothing to go by
    assert next_up(10.0, 0.4) == 20.0  # 0.5 / 0.4 = 1.25x: at least double
    assert next_up(10.0, 0.1) == pytest.approx(50.0)
    assert next_up(10.0, 0.01) == 80.0
