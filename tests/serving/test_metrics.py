from __future__ import annotations

import json

import pytest

from autoopt.config.serving import ServingClassConfig
from autoopt.serving.metrics import DONE, REJECTED, UNFINISHED, RequestRecord, ServingReport, summarize

CLASSES = [ServingClassConfig("P0", 0, 200.0, 0.5, 8), ServingClassConfig("P3", 3, 0.0, 0.5, 8)]


def done(i: int, cls: str, arrival: float, start: float, first: float, last: float, tokens: int) -> RequestRecord:
    return RequestRecord(i, cls, arrival, DONE, start, first, last, tokens)


def report() -> ServingReport:
    records = [
        done(1, "P0", 0.0, 0.01, 0.05, 0.15, 11),  # e2e 150 ms: meets 200 ms
        done(2, "P0", 1.0, 1.10, 1.20, 1.30, 5),  # e2e 300 ms: misses
        RequestRecord(3, "P0", 2.0, REJECTED),
        done(4, "P3", 0.5, 0.6, 0.7, 5.5, 2),  # best effort: any completion counts
        RequestRecord(5, "P3", 3.0, UNFINISHED, start=3.1, first_token=3.2, last_token=3.3, tokens=1),
    ]
    return summarize(records, CLASSES, [1, 2, 1], max_batch=4, duration_s=10.0, rate_rps=0.5)


def test_per_class_latency_attainment_goodput_and_rejections_from_hand_made_timings() -> None:
    r = report()
    p0, p3 = r.by_class("P0"), r.by_class("P3")
    assert (p0.offered, p0.completed, p0.rejected, p0.met_slo) == (3, 2, 1, 1)
    assert p0.attainment == pytest.approx(1 / 3) and p0.goodput_rps == pytest.approx(0.1)
    assert p0.e2e.n == 2 and p0.e2e.p50 == pytest.approx(225.0)
    assert p0.ttft.p50 == pytest.approx((50 + 200) / 2)
    assert p0.tpot.p50 == pytest.approx((10.0 + 25.0) / 2)  # (150-50)/10 and (1300-1200)/4 ms
    assert p0.queue.p50 == pytest.approx((10 + 100) / 2)
    assert (p3.met_slo, p3.unfinished, p3.attainment) == (1, 1, 0.5)
    assert p3.queue.n == 2 and p3.e2e.n == 1  # the unfinished one waited but never completed
    assert r.overall.offered == 5 and r.overall.met_slo == 2 and r.overall.output_tokens == 11 + 5 + 2 + 1
    assert r.batches == 3 and r.occupancy == pytest.approx((4 / 3) / 4)


def test_report_round_trips_through_json() -> None:
    r = report()
    assert ServingReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_a_request_meets_its_slo_only_within_every_deadline_its_class_sets() -> None:
    from autoopt.serving.metrics import meets_slo

    request = RequestRecord(1, "P1", 0.0)
    for t in (0.08, 0.10, 0.16, 0.17):  # first token at 80 ms, a 60 ms stall, last at 170 ms
        request.token(t)
    request.outcome = DONE
    assert meets_slo(request, ServingClassConfig("P1", 1))  # best effort
    held = [ServingClassConfig("P1", 1, 170.0), ServingClassConfig("P1", 1, ttft_slo_ms=80.0),
            ServingClassConfig("P1", 1, itl_slo_ms=60.0), ServingClassConfig("P1", 1, 200.0, ttft_slo_ms=90.0)]
    missed = [ServingClassConfig("P1", 1, 169.0), ServingClassConfig("P1", 1, ttft_slo_ms=79.0),
              ServingClassConfig("P1", 1, itl_slo_ms=59.0), ServingClassConfig("P1", 1, 200.0, 0.1, itl_slo_ms=50.0)]
    assert all(meets_slo(request, c) for c in held)
    assert not any(meets_slo(request, c) for c in missed)
    request.outcome = UNFINISHED
    assert not meets_slo(request, ServingClassConfig("P1", 1))
    streaming = [ServingClassConfig("P1", 1, ttft_slo_ms=100.0, itl_slo_ms=50.0)]
    request.outcome = DONE
    p1 = summarize([request], streaming, [1], max_batch=1, duration_s=1.0, rate_rps=1.0).by_class("P1")
    assert (p1.met_slo, p1.slo_ms, p1.ttft_slo_ms, p1.itl_slo_ms) == (0, 0.0, 100.0, 50.0)


def test_empty_class_has_no_percentiles_and_full_attainment() -> None:
    r = summarize([], CLASSES, [], max_batch=1, duration_s=1.0, rate_rps=1.0)
    assert r.by_class("P0").e2e.p99 is None and r.by_class("P0").attainment == 1.0 and r.occupancy == 0.0


def test_the_largest_inter_token_latency_is_each_requests_longest_wait_between_two_tokens() -> None:
    stalled, steady, single = RequestRecord(1, "P0", 0.0), RequestRecord(2, "P0", 0.0), RequestRecord(3, "P0", 0.0)
    for t in (0.10, 0.11, 0.19, 0.20):  # a prefill held the third token 80 ms
        stalled.token(t)
    for t in (0.10, 0.12, 0.14):
        steady.token(t)
    single.token(0.3)
    for r in (stalled, steady, single):
        r.outcome = DONE
    assert (stalled.first_token, stalled.last_token, stalled.tokens) == (0.10, 0.20, 4)
    itl = summarize([stalled, steady, single], CLASSES, [1], max_batch=1, duration_s=1.0,
                    rate_rps=1.0).by_class("P0").itl_max
    assert itl.n == 2 and itl.p50 == pytest.approx((80.0 + 20.0) / 2)
