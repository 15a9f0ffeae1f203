"""pick=fastest: which contenders a runoff times, and how it decides from per-round samples."""

from __future__ import annotations

from autoopt import pareto
from autoopt.jobs.confirm import SpeedSample
from autoopt.study.runoff import decide


def _runs(*e2e: float) -> list[SpeedSample]:
    return [SpeedSample(1000.0 / ms, {"e2e_p90": ms}, 6) for ms in e2e]


INT8 = pareto.Point("42", (55.6, 0.020, 0.007))
INT4 = pareto.Point("17", (52.2, 0.019, 0.022))
FP32 = pareto.Point("3", (84.0, 0.031, 0.0))


def test_contenders_are_the_front_within_the_margin_of_the_fastest() -> None:
    assert pareto.contenders([INT8, INT4, FP32], 0.10) == [INT8, INT4]
    assert pareto.contenders([INT8, INT4, FP32], 0.0) == [INT4]
    capacity = [pareto.Point("1", (-100.0, 1.0, 0.0)), pareto.Point("2", (-95.0, 1.0, 0.0))]
    assert pareto.contenders(capacity, 0.10) == capacity  # -capacity: within 10 % of 100 req/s


def test_a_less_accurate_contender_wins_only_if_faster_in_every_round() -> None:
    won = decide([INT8, INT4], [_runs(56.0, 60.0, 55.0), _runs(52.0, 57.0, 51.0)], "e2e_p90")
    assert won.anchor is INT8 and won.chosen is INT4
    assert won.gains["17"].low > 1.0 and "faster than trial 42" in won.reason

    tied = decide([INT8, INT4], [_runs(56.0, 60.0, 55.0), _runs(52.0, 61.0, 51.0)], "e2e_p90")
    assert tied.chosen is INT8 and "none was faster" in tied.reason


def test_a_minimum_gain_keeps_the_most_accurate_unless_every_round_beats_it_by_more() -> None:
    runs = [_runs(56.0, 60.0, 55.0), _runs(53.0, 57.0, 52.0)]  # faster in every round, by 5-6 %
    assert decide([INT8, INT4], runs, "e2e_p90", min_gain=0.04).chosen is INT4
    kept = decide([INT8, INT4], runs, "e2e_p90", min_gain=0.06)
    assert kept.chosen is INT8 and "none was faster than it by more than 6 %" in kept.reason


def test_among_several_winners_the_largest_median_gain_is_picked() -> None:
    other = pareto.Point("9", (51.0, 0.018, 0.04))
    r = decide([INT8, INT4, other], [_runs(60.0, 60.0, 60.0), _runs(55.0, 54.0, 56.0), _runs(50.0, 59.0, 58.0)],
               "e2e_p90")
    assert r.chosen is INT4  # trial 9 won every round too, but by a smaller median
    assert set(r.gains) == {"17", "9"}
