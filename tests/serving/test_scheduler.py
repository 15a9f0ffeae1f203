from __future__ import annotations

import pytest

from autoopt.config.serving import ServingClassConfig
from autoopt.serving.scheduler import DELAYED, QUEUED, REJECTED, Scheduler, ServingRequest


def classes(limit: int = 8, on_full: str = "reject") -> list[ServingClassConfig]:
    return [
        ServingClassConfig("P0", 0, 200.0, 0.25, limit, on_full, 8.0),
        ServingClassConfig("P1", 1, 500.0, 0.25, limit, on_full, 4.0),
        ServingClassConfig("P2", 2, 1000.0, 0.25, limit, on_full, 2.0),
        ServingClassConfig("P3", 3, 0.0, 0.25, limit, on_full, 1.0),
    ]


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, cls: str, arrival: float, prompt_len: int = 16, new: int = 4) -> ServingRequest:
        self.n += 1
        return ServingRequest(self.n, cls, prompt_len, new, arrival)


def ids(batch: list[ServingRequest] | None) -> list[int]:
    assert batch is not None
    return [r.id for r in batch]


def test_strict_policy_serves_most_urgent_class_first_and_fifo_within_a_class() -> None:
    s, req = Scheduler(classes(), policy="strict", max_batch=1), Ids()
    p3, p1a, p0, p1b = req("P3", 0.0), req("P1", 0.1), req("P0", 0.2), req("P1", 0.3)
    for r in (p3, p1a, p0, p1b):
        assert s.submit(r) == QUEUED
    order = [ids(s.next_batch(1.0))[0] for _ in range(4)]
    assert order == [p0.id, p1a.id, p1b.id, p3.id]
    assert s.next_batch(1.0) is None


def test_weighted_policy_leads_in_proportion_to_weights_and_serves_every_class() -> None:
    s, req = Scheduler(classes(limit=100), policy="weighted", max_batch=1), Ids()
    for i in range(60):
        for name in ("P0", "P3"):
            s.submit(req(name, i * 1e-3))
    served = [s.next_batch(10.0)[0].cls for _ in range(45)]  # type: ignore[index]
    assert served.count("P0") == 40 and served.count("P3") == 5  # weights 8 : 1
    assert "P3" in served[:9]  # never starved for long under weighted round-robin


@pytest.mark.parametrize("continuous", [False, True])
def test_weighted_policy_shares_the_rows_of_full_batches_by_weight(continuous: bool) -> None:
    s, req = Scheduler(classes(limit=200), policy="weighted", max_batch=4, continuous=continuous), Ids()
    for i in range(180):
        for name in ("P0", "P3"):
            s.submit(req(name, i * 1e-3))
    rows = [r.cls for _ in range(45) for r in s.next_batch(10.0)]  # type: ignore[union-attr]
    assert len(rows) == 180 and rows.count("P0") == 160 and rows.count("P3") == 20  # weights 8 : 1
    assert "P3" in rows[:9]


def test_weighted_policy_gives_rows_only_to_classes_that_may_take_them_and_keeps_fifo() -> None:
    s, req = Scheduler(classes(), policy="weighted", max_batch=3), Ids()
    p0_short, p3_a, p3_b, p0_long = req("P0", 0.0, 16), req("P3", 0.1, 64), req("P3", 0.2, 64), req("P0", 0.3, 64)
    for r in (p0_short, p3_a, p3_b, p0_long):
        s.submit(r)
    assert ids(s.next_batch(1.0)) == [p0_short.id]  # the lead; no other request has its length
    assert ids(s.next_batch(1.0)) == [p0_long.id, p3_a.id, p3_b.id]


def test_strict_policy_fills_rows_most_urgent_class_first() -> None:
    s, req = Scheduler(classes(), policy="strict", max_batch=3), Ids()
    p3, p1, p0a, p0b = req("P3", 0.0), req("P1", 0.1), req("P0", 0.2), req("P0", 0.3)
    for r in (p3, p1, p0a, p0b):
        s.submit(r)
    assert ids(s.next_batch(1.0)) == [p0a.id, p0b.id, p1.id]


def test_planning_a_batch_does_not_spend_round_robin_credit() -> None:
    s, req = Scheduler(classes(), policy="weighted", max_batch=2, max_queue_delay_s=1.0), Ids()
    p0, p3 = req("P0", 0.0, 16), req("P3", 0.0, 64)  # two lengths: each batch is one row, released after 1 s
    s.submit(p0)
    s.submit(p3)
    for i in range(20):  # 20 charges would hand P3 (weight 1 to P0's 8) the lead
        assert s.next_batch(i / 40) is None and s.next_release(i / 40) == 1.0
    assert ids(s.next_batch(1.0)) == [p0.id]


def test_queue_limit_rejects_when_on_full_is_reject() -> None:
    s, req = Scheduler(classes(limit=2), max_batch=1), Ids()
    outcomes = [s.submit(req("P1", 0.0)) for _ in range(3)]
    assert outcomes == [QUEUED, QUEUED, REJECTED]
    assert s.rejected()["P1"] == 1 and s.depth()["P1"] == 2


def test_queue_limit_holds_back_when_on_full_is_delay_and_admits_when_room_frees() -> None:
    s, req = Scheduler(classes(limit=1, on_full="delay"), max_batch=1), Ids()
    first, second = req("P3", 0.0), req("P3", 0.1)
    assert [s.submit(first), s.submit(second)] == [QUEUED, DELAYED]
    assert s.depth()["P3"] == 2
    assert ids(s.next_batch(1.0)) == [first.id]
    assert ids(s.next_batch(1.0)) == [second.id]  # promoted once the queue had room


def test_starvation_bound_serves_an_old_low_class_request_before_urgent_ones() -> None:
    s, req = Scheduler(classes(), policy="strict", max_batch=1, starvation_s=2.0), Ids()
    old = req("P3", 0.0)
    s.submit(old)
    for t in (1.9, 2.0, 2.05):
        s.submit(req("P0", t))
    assert s.next_batch(1.95)[0].cls == "P0"  # type: ignore[index]  # not starving yet
    assert ids(s.next_batch(2.1)) == [old.id]  # waited 2.1 s >= 2 s: served regardless of class


def test_strict_fills_a_mixed_batch_most_urgent_class_first_each_class_giving_the_leads_length_first() -> None:
    s, req = Scheduler(classes(), max_batch=3, mix_lengths=True), Ids()
    longer, a, b, c = req("P1", 0.0, 64), req("P1", 0.0, 16), req("P3", 0.0, 32), req("P2", 0.0, 16)
    d, e = req("P0", 0.1, 32), req("P3", 0.0, 16)
    for r in (longer, a, b, c, d, e):
        s.submit(r)
    # P0 leads; the shorter P1 and P2 come before the P3 of its length; the longer P1 never joins it
    assert ids(s.next_batch(0.2)) == [d.id, a.id, c.id]
    assert ids(s.next_batch(0.2)) == [longer.id, b.id, e.id]  # the P1 leads its own: the P3's of any length join


def test_a_request_of_the_leads_length_never_takes_a_row_from_a_more_urgent_shorter_one() -> None:
    """Strict took every request of the lead's length, whatever its class, before any shorter one: a P3 passed a P1."""
    for policy in ("strict", "weighted"):
        s, req = Scheduler(classes(), policy=policy, max_batch=2, mix_lengths=True, max_length=1000), Ids()
        lead, p3, p1 = req("P0", 0.0, 64, 8), req("P3", 0.0, 64, 8), req("P1", 0.0, 32, 8)
        for r in (lead, p3, p1):
            s.submit(r)
        assert ids(s.next_batch(0.2)) == [lead.id, p1.id], policy


def test_a_shorter_prompt_joins_only_if_its_new_tokens_fit_max_length_after_the_leads_prompt() -> None:
    s, req = Scheduler(classes(), max_batch=4, mix_lengths=True, max_length=40), Ids()
    lead = req("P0", 0.0, 24)
    fits, too_long = req("P1", 0.0, 4, new=16), req("P1", 0.0, 4, new=17)  # 24 + 16 = 40
    for r in (lead, fits, too_long):
        s.submit(r)
    assert ids(s.next_batch(0.1)) == [lead.id, fits.id]
    assert ids(s.next_batch(0.1)) == [too_long.id]


def test_without_mix_lengths_a_batch_holds_only_equal_prompt_lengths_up_to_max_batch() -> None:
    s, req = Scheduler(classes(), max_batch=3, mix_lengths=False), Ids()
    a, b, c, d, e = req("P1", 0.0, 16), req("P1", 0.0, 32), req("P2", 0.0, 16), req("P0", 0.1, 32), req("P3", 0.0, 16)
    for r in (a, b, c, d, e):
        s.submit(r)
    first = s.next_batch(0.2)
    assert ids(first) == [d.id, b.id]  # P0 leads; only its length joins (2 < 3 rows, released by delay 0)
    assert ids(s.next_batch(0.2)) == [a.id, c.id, e.id]  # most urgent class first, then age


def test_partial_batch_waits_for_max_queue_delay_unless_full() -> None:
    s, req = Scheduler(classes(), max_batch=2, max_queue_delay_s=0.010), Ids()
    first = req("P1", 1.000)
    s.submit(first)
    assert s.next_batch(1.005) is None
    assert s.next_release(1.005) == pytest.approx(1.010)
    assert ids(s.next_batch(1.010)) == [first.id]
    second, third = req("P1", 2.0), req("P1", 2.001)
    s.submit(second)
    s.submit(third)
    assert ids(s.next_batch(2.001)) == [second.id, third.id]  # full: released at once


def test_next_release_never_points_to_the_past_for_a_waiting_group() -> None:
    s, req = Scheduler(classes(), max_batch=4, max_queue_delay_s=0.05, starvation_s=1.0, mix_lengths=False), Ids()
    s.submit(req("P3", 0.0, 16))  # due at 0.05, but P0 leads and its group (another length) is not due
    s.submit(req("P0", 0.04, 32))
    assert s.next_batch(0.06) is None
    assert s.next_release(0.06) == pytest.approx(0.09)


def test_cancel_drops_a_waiting_request_and_frees_its_slot() -> None:
    s, req = Scheduler(classes(limit=1), max_batch=1), Ids()
    gone = req("P0", 0.0)
    s.submit(gone)
    assert s.submit(req("P0", 0.0)) == REJECTED
    assert s.cancel(gone.id) and not s.cancel(gone.id)
    assert s.submit(req("P0", 0.1)) == QUEUED


def test_unknown_class_names_the_known_ones() -> None:
    s = Scheduler(classes())
    with pytest.raises(KeyError, match="P0, P1, P2, P3"):
        s.submit(ServingRequest(1, "gold", 4, 4, 0.0))


@pytest.mark.parametrize(("every", "pattern"), [(2, "30303030"), (4, "30003033"), (1, "33330000")])
def test_starving_requests_lead_at_most_one_batch_in_every_n_so_urgent_work_keeps_running(
    every: int, pattern: str
) -> None:
    s = Scheduler(classes(limit=100), max_batch=1, starvation_s=1.0, starvation_every=every)
    req = Ids()
    for i in range(4):
        s.submit(req("P3", 0.0 + i * 1e-3))
        s.submit(req("P0", 5.0))
    served = "".join(s.next_batch(5.0)[0].cls[1] for _ in range(8))  # type: ignore[index]
    assert served == pattern


def test_next_release_after_a_starvation_batch_waits_for_the_policy_group() -> None:
    s = Scheduler(classes(), max_batch=4, max_queue_delay_s=0.05, starvation_s=1.0, starvation_every=2)
    req = Ids()
    s.submit(req("P3", 0.0, 16))
    s.submit(req("P3", 0.0, 32))
    assert s.next_batch(2.0) is not None  # the starving 16-token request
    s.submit(req("P0", 2.0, 64))
    assert s.next_release(2.0) == pytest.approx(2.05)  # not "now": the old P3 waits its turn


def test_a_starving_request_is_released_at_the_time_next_release_names() -> None:
    # 0.5 + 0.1 - 0.5 < 0.1 in floating point: the release time and the starvation test must agree, or a
    # caller that sleeps until `next_release` finds nothing due and, on a fake clock, never advances.
    s = Scheduler(classes(), max_batch=4, max_queue_delay_s=1.0, starvation_s=0.1)
    waiting = Ids()("P3", 0.5)
    s.submit(waiting)
    release = s.next_release(0.5)
    assert release == pytest.approx(0.6)
    assert ids(s.next_batch(release)) == [waiting.id]


def test_a_delay_class_is_rejected_once_max_waiting_requests_wait_in_all() -> None:
    s, req = Scheduler(classes(limit=1, on_full="delay"), max_batch=1, max_waiting=3), Ids()
    outcomes = [s.submit(req("P3", 0.1 * i)) for i in range(5)]
    assert outcomes == [QUEUED, DELAYED, DELAYED, REJECTED, REJECTED] and len(s) == 3
    s.next_batch(1.0)
    assert s.submit(req("P3", 1.0)) == DELAYED  # room again


def test_continuous_joins_take_any_length_most_urgent_first_up_to_the_free_rows_at_once() -> None:
    s, req = Scheduler(classes(), max_batch=4, max_queue_delay_s=0.05, continuous=True), Ids()
    long_p3, short_p1, other_p0 = req("P3", 0.0, 64), req("P1", 0.01, 8), req("P0", 0.02, 30)
    for r in (long_p3, short_p1, other_p0):
        s.submit(r)
    assert s.next_batch(0.02, room=0) is None  # a full stream takes nobody
    assert s.next_release(0.02, room=0) is None
    assert ids(s.next_batch(0.02, room=2)) == [other_p0.id, short_p1.id]
    assert s.next_release(0.02, room=3) == pytest.approx(0.02)  # one waiting, rows free: no queue delay
    assert ids(s.next_batch(0.02, room=3)) == [long_p3.id]


def test_a_continuous_batch_prefills_the_most_urgent_class_first_under_strict_and_in_admission_order_under_weighted(
) -> None:
    req = Ids()
    p3, p0 = req("P3", 0.0), req("P0", 0.1)
    strict = Scheduler(classes(), policy="strict", starvation_s=2.0)
    weighted = Scheduler(classes(), policy="weighted", starvation_s=2.0)
    assert min([p3, p0], key=lambda r: strict.urgency(r, 1.9)) is p0
    assert min([p3, p0], key=lambda r: weighted.urgency(r, 1.9)) is p3
    # the starvation bound holds for a prompt waiting for its parts: P3 has waited 2 s, P0 not yet
    assert min([p0, p3], key=lambda r: strict.urgency(r, 2.0)) is p3
