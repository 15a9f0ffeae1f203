from __future__ import annotations

import itertools

import numpy as np
import pytest

from autoopt.pareto import PICK_MODES, Point, front, hypervolume, knee, pick


def points(*objectives: tuple[float, ...]) -> list[Point]:
    return [Point(str(i), tuple(map(float, o)), {"i": i}) for i, o in enumerate(objectives)]


def keys(pts: list[Point]) -> list[str]:
    return [p.key for p in pts]


def test_front_drops_dominated_points() -> None:
    pts = points((1, 1), (2, 2), (0, 3), (1, 2), (3, 0))

    result = front(pts)

    assert keys(result) == ["0", "2", "4"]  # (2,2) and (1,2) are dominated by (1,1)


def test_front_keeps_equal_points() -> None:
    pts = points((1, 1), (1, 1), (2, 0.5), (2, 0.5), (2, 1))

    result = front(pts)

    assert keys(result) == ["0", "1", "2", "3"]


def test_front_matches_brute_force_with_ties_and_duplicates() -> None:
    rng = np.random.default_rng(0)
    obj = rng.integers(0, 12, size=(700, 3)).astype(float)  # coarse grid: many ties and duplicates
    pts = [Point(str(i), tuple(row)) for i, row in enumerate(obj)]

    result = front(pts)

    def dominated(a: np.ndarray) -> bool:
        return any((b <= a).all() and (b < a).any() for b in obj)

    assert keys(result) == [p.key for p, row in zip(pts, obj, strict=True) if not dominated(row)]


def test_front_of_no_points_is_empty_and_nan_is_refused() -> None:
    assert front([]) == []
    with pytest.raises(ValueError, match="NaN.*7"):
        front([Point("7", (1.0, float("nan")))])


def test_hypervolume_of_one_point_in_2d_is_its_box_area() -> None:
    assert hypervolume([(1, 2)], (4, 5)) == pytest.approx(9.0)


def test_hypervolume_2d_counts_overlap_once() -> None:
    # boxes [1,4]x[3,4] (3) and [2,4]x[1,4] (6) overlap in [2,4]x[3,4] (2)
    assert hypervolume([(1, 3), (2, 1)], (4, 4)) == pytest.approx(7.0)


def test_hypervolume_ignores_points_not_strictly_better_than_reference() -> None:
    assert hypervolume([(4, 1), (5, 0), (1, 5)], (4, 5)) == 0.0
    assert hypervolume([], (1, 1, 1)) == 0.0


def test_hypervolume_3d_union_of_two_boxes() -> None:
    # 4*4*2 + 2*2*4 - overlap 2*2*2
    assert hypervolume([(0, 0, 2), (2, 2, 0)], (4, 4, 4)) == pytest.approx(40.0)


def test_hypervolume_3d_matches_inclusion_exclusion() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, size=(7, 3))
    ref = np.ones(3)
    exact = 0.0
    for r in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, r):
            exact += (-1) ** (r + 1) * np.prod(ref - np.max(subset, axis=0))

    assert hypervolume(pts.tolist(), ref.tolist()) == pytest.approx(exact, rel=1e-12)


def test_hypervolume_unchanged_by_dominated_and_duplicate_points() -> None:
    base = [(1, 2, 3), (3, 1, 2), (2, 3, 1)]

    assert hypervolume(base + [(3, 3, 3), (1, 2, 3)], (4, 4, 4)) == pytest.approx(hypervolume(base, (4, 4, 4)))


def test_knee_picks_the_corner_of_an_l_shaped_front() -> None:
    pts = points((0, 10, 5), (1, 1, 5), (10, 0, 5), (0.5, 6, 5))  # third objective constant

    assert knee(pts).key == "1"


def test_knee_breaks_ties_by_trial_number() -> None:
    pts = [Point("10", (0.0, 1.0)), Point("9", (1.0, 0.0))]

    assert knee(pts).key == "9"


def test_pick_each_mode_returns_its_extreme_with_a_reason() -> None:
    pts = points((1, 5, 0.3), (3, 1, 0.2), (5, 4, 0.0), (2.5, 2.5, 0.15))
    expected = {"fastest": "0", "knee": "3", "min_latency": "0", "min_cost": "1", "max_accuracy": "2"}

    for how, key in expected.items():
        chosen, reason = pick(pts, how)
        assert chosen.key == key, how
        assert reason and "\n" not in reason


def test_pick_by_weights_follows_the_weights() -> None:
    pts = points((1, 5, 0.3), (3, 1, 0.2), (5, 4, 0.0))

    assert pick(pts, "weights", [1, 0, 0])[0].key == "0"
    assert pick(pts, "weights", [0, 0, 1])[0].key == "2"
    chosen, reason = pick(pts, "weights", [0.2, 0.7, 0.1])
    assert chosen.key == "1"
    assert "cost=0.7" in reason


def test_pick_refuses_unknown_mode_and_bad_weights() -> None:
    pts = points((1, 5, 0.3), (3, 1, 0.2))

    with pytest.raises(ValueError) as unknown:
        pick(pts, "quickest")
    assert all(mode in str(unknown.value) for mode in PICK_MODES)
    with pytest.raises(ValueError, match="one weight per objective"):
        pick(pts, "weights", None)
    with pytest.raises(ValueError, match="non-negative"):
        pick(pts, "weights", [0, 0, 0])
    with pytest.raises(ValueError, match="empty front"):
        pick([], "knee")


def test_knee_with_scale_ignores_a_negligible_spread_that_min_max_would_stretch() -> None:
    from autoopt.pareto import Point, pick

    fast = Point("19", (72.0, 0.023, 0.0049))
    slow = Point("8", (113.0, 0.034, 0.0039))
    exact = Point("2", (170.0, 0.060, 0.0))
    front = [fast, slow, exact]

    by_range, _ = pick(front, "knee")
    by_scale, reason = pick(front, "knee", scale=(350.0, 0.13, 0.05))

    assert by_range.key == "8"
    assert by_scale.key == "19"
    assert "divided by their scale" in reason


def test_knee_does_not_depend_on_how_slow_the_reference_was_measured() -> None:
    from autoopt.pareto import Point, pick

    int8 = Point("28", (204.0, 0.0707, 0.00586))
    exact = Point("4", (221.0, 0.0782, 0.0))
    front = [int8, exact]

    chosen, _ = pick(front, "knee", scale=(204.0, 0.0707, 0.05))

    assert chosen.key == "28"  # 8 % slower and 11 % dearer outweighs 0.12 of the bar's loss
