"""The Pareto front of measured candidates, its hypervolume, and the rule that picks one point of it.

Every objective is minimized. The objectives of a sweep are ordered as `OBJECTIVES`:
(latency, cost, accuracy_loss).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OBJECTIVES = ("latency", "cost", "accuracy_loss")
PICK_MODES = ("fastest", "knee", "min_latency", "min_cost", "max_accuracy", "weights")

_TIE = 1e-12  # relative distance under which two candidates of `knee`/`weights` count as tied


@dataclass(frozen=True)
class Point:
    """One candidate in objective space: `key` names it (e.g. the trial number), `payload` carries
    whatever the caller wants back (e.g. the candidate's knobs); it takes no part in comparisons."""

    key: str
    objectives: tuple[float, ...]
    payload: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _matrix(points: Sequence[Point]) -> np.ndarray:
    if len({len(p.objectives) for p in points}) > 1:
        raise ValueError("all points must have the same number of objectives")
    matrix = np.array([p.objectives for p in points], dtype=float).reshape(len(points), -1)
    bad = [p.key for p, row in zip(points, matrix, strict=True) if np.isnan(row).any()]
    if bad:
        raise ValueError(f"objectives must not be NaN; points with NaN: {', '.join(bad)}")
    return matrix


def front(points: Sequence[Point]) -> list[Point]:
    """The non-dominated points, in input order. A point is dropped when another is no worse in every
    objective and strictly better in one; equal points dominate neither, so duplicates all stay."""
    if not points:
        return []
    obj = _matrix(points)
    # The lexicographically smallest remaining point is dominated by nothing left (a dominator would sort
    # before it) nor by anything removed (dominance is transitive): keep it, drop what it dominates, repeat.
    # Cost O(n * front size * m).
    remaining = np.lexsort(obj.T[::-1])
    keep = np.zeros(len(points), dtype=bool)
    while remaining.size:
        best, rest = obj[remaining[0]], remaining[1:]
        keep[remaining[0]] = True
        dominated = (obj[rest] >= best).all(axis=1) & (obj[rest] > best).any(axis=1)
        remaining = rest[~dominated]
    return [p for p, k in zip(points, keep, strict=True) if k]


def hypervolume(points_objectives: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume of objective space dominated by the points and bounded by `reference`.

    Points not strictly better than the reference in every objective contribute nothing. Slices along
    the last objective down to a 2-D sweep: O(n log n) in 2-D, O(n^2 log n) in 3-D, meant for fronts
    of up to a few hundred points.
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points_objectives, dtype=float).reshape(-1, ref.size)
    pts = pts[(pts < ref).all(axis=1)]
    return float(_hv(pts, ref)) if len(pts) else 0.0


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if ref.size == 1:
        return float(ref[0] - pts[:, 0].min())
    if ref.size == 2:
        pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]  # by x, then y
        best_y_before = np.concatenate(([ref[1]], np.minimum.accumulate(pts[:-1, 1])))
        return float(((ref[0] - pts[:, 0]) * np.clip(best_y_before - pts[:, 1], 0, None)).sum())
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    tops = np.append(pts[1:, -1], ref[-1])
    volume = 0.0
    for i in range(len(pts)):
        if tops[i] > pts[i, -1]:
            volume += _hv(pts[: i + 1, :-1], ref[:-1]) * (tops[i] - pts[i, -1])
    return volume


def _key_order(key: str) -> tuple[int, Any]:
    """Trial numbers sort numerically ("9" before "10"), other keys alphabetically after them."""
    return (0, int(key)) if re.fullmatch(r"\d+", key) else (1, key)


def _normalised(points: Sequence[Point], scale: Sequence[float] | None = None) -> np.ndarray:
    """Each objective's distance from the best value among `points` (the ideal point), divided by its
    `scale` when given; otherwise min-max normalised over `points`, where a constant objective becomes
    all zeros."""
    obj = _matrix(points)
    if scale is not None:
        s = np.asarray(scale, dtype=float)
        if s.shape != (obj.shape[1],) or (s <= 0).any():
            raise ValueError(f"scale needs one positive number per objective, got {list(scale)}")
        return (obj - obj.min(axis=0)) / s
    low, span = obj.min(axis=0), np.ptp(obj, axis=0)
    return np.divide(obj - low, span, out=np.zeros_like(obj), where=span > 0)


def _argmin_by_key(points: Sequence[Point], scores: np.ndarray) -> Point:
    best = scores.min()
    tied = [p for p, s in zip(points, scores, strict=True) if s <= best + _TIE * (1.0 + abs(best))]
    return min(tied, key=lambda p: _key_order(p.key))


def contenders(front: Sequence[Point], margin: float) -> list[Point]:
    """The points whose first objective is within `margin` (a fraction of the best value's magnitude) of
    the front's best: those trial figures taken minutes apart cannot tell apart."""
    best = min(p.objectives[0] for p in front)
    return [p for p in front if p.objectives[0] <= best + margin * abs(best)]


def knee(front: Sequence[Point], scale: Sequence[float] | None = None) -> Point:
    """The point closest (Euclidean) to the ideal point after normalising each objective (see
    `_normalised`); ties go to the smallest key."""
    if not front:
        raise ValueError("knee of an empty front: no complete trial to choose from")
    return _argmin_by_key(front, np.linalg.norm(_normalised(front, scale), axis=1))


def _min_objective(front: Sequence[Point], index: int) -> Point:
    if len(front[0].objectives) <= index:
        raise ValueError(f"objective {OBJECTIVES[index]!r} needs at least {index + 1} objectives per point")
    # Ties on the chosen objective are broken by the others in order, then by key.
    return min(front, key=lambda p: (p.objectives[index], p.objectives, _key_order(p.key)))


def _weighted(front: Sequence[Point], weights: Sequence[float] | None, scale: Sequence[float] | None) -> Point:
    m = len(front[0].objectives)
    if weights is None or len(weights) != m:
        raise ValueError(f"how='weights' needs one weight per objective ({m}), got {weights!r}")
    w = np.asarray(weights, dtype=float)
    if (w < 0).any() or not w.any():
        raise ValueError(f"weights must be non-negative and not all zero, got {list(weights)}")
    return _argmin_by_key(front, _normalised(front, scale) @ w)


def pick(
    front: Sequence[Point],
    how: str = "knee",
    weights: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    speed: str = "latency",
) -> tuple[Point, str]:
    """Choose one point of `front` and say why in one sentence.

    `how` is one of `PICK_MODES`; objectives are read in the order of `OBJECTIVES`. "knee" and
    "weights" compare each objective's distance from the front's best value divided by `scale` (e.g.
    that best latency and cost, and the accuracy bar's loss, so that a tiny spread in one objective is
    not stretched to the full range), or min-max normalised over the front when no scale is given.
    `speed` names the first objective in the reason: "latency", or "capacity" where it is -capacity.
    """
    if how not in PICK_MODES:
        raise ValueError(f"pick how={how!r} is not known; choose one of: {', '.join(PICK_MODES)}")
    if not front:
        raise ValueError("cannot pick from an empty front: no complete trial to choose from")
    basis = "as distances from the front's best divided by their scale" if scale is not None else "normalised over the front"
    if how == "knee":
        return knee(front, scale), f"knee of the front: closest to the ideal point with objectives {basis}"
    if how == "weights":
        chosen = _weighted(front, weights, scale)
        named = ", ".join(f"{n}={w:g}" for n, w in zip(OBJECTIVES, weights or (), strict=False))
        return chosen, f"lowest weighted sum of the objectives {basis} ({named})"
    index = {"fastest": 0, "min_latency": 0, "min_cost": 1, "max_accuracy": 2}[how]
    best_speed = "highest capacity" if speed == "capacity" else f"lowest {speed}"
    reasons = {
        "fastest": f"{best_speed} on the front by the trials' own figures",
        "min_latency": f"{best_speed} on the front",
        "min_cost": "lowest cost on the front",
        "max_accuracy": "lowest accuracy loss on the front",
    }
    return _min_objective(front, index), reasons[how] + " (ties broken by the other objectives in order)"
