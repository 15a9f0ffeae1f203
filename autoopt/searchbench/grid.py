"""Every distinct candidate of a space, exactly as the sampler produces them.

The grid is enumerated by running `autoopt.space.sample.sample` itself on a trial that walks every
branch of its `suggest_categorical` calls (depth first), so conditional knobs (`ort.quant_block_size`
only for weight-only quantization, ...) are expanded exactly as a sweep would sample them, and a knob
added to the space later is picked up without changes here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from autoopt.config.schema import CandidateConfig
from autoopt.space.sample import sample


@dataclass(frozen=True)
class GridPoint:
    params: dict[str, Any]  # the Optuna parameters that produce this candidate (first such set)
    candidate: CandidateConfig
    key: str


@dataclass(frozen=True)
class Grid:
    """`points`: distinct candidates that can be measured here, in enumeration order. `combinations`:
    parameter sets the sampler can produce; `duplicates`: those whose key an earlier one already has;
    `rejected`: candidates (distinct by key) refused before any build, counted by reason."""

    points: list[GridPoint]
    combinations: int
    duplicates: int
    rejected: dict[str, int]

    def __len__(self) -> int:
        return len(self.points)

    def describe(self) -> str:
        lines = [
            f"{self.combinations} parameter combinations, {self.duplicates} duplicates by candidate key, "
            f"{sum(self.rejected.values())} rejected, {len(self.points)} to measure"
        ]
        lines += [f"  rejected {n}x: {reason}" for reason, n in sorted(self.rejected.items(), key=lambda x: -x[1])]
        return "\n".join(lines)


class _PathTrial:
    """Stands in for an Optuna trial: answers each `suggest_categorical` with the choice `path` names
    and records how many choices each call offered, so the caller can advance to the next branch."""

    def __init__(self, path: Sequence[int]):
        self.path = list(path)
        self.widths: list[int] = []
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        depth = len(self.widths)
        if not choices:
            raise ValueError(f"parameter {name} has no choices; give the space at least one value for it")
        self.widths.append(len(choices))
        index = self.path[depth] if depth < len(self.path) else 0
        self.params[name] = choices[index]
        return choices[index]


def parameter_sets(space: Any) -> Iterator[tuple[dict[str, Any], CandidateConfig]]:
    """Every (parameters, candidate) the sampler can produce from `space`, depth first."""
    path: list[int] = []
    while True:
        trial = _PathTrial(path)
        candidate = sample(trial, space)  # type: ignore[arg-type]
        yield dict(trial.params), candidate
        path = trial.path[: len(trial.widths)] + [0] * (len(trial.widths) - len(trial.path))
        # odometer: advance the deepest call that has a choice left, drop everything after it
        depth = len(trial.widths) - 1
        while depth >= 0 and path[depth] + 1 >= trial.widths[depth]:
            depth -= 1
        if depth < 0:
            return
        path = path[:depth] + [path[depth] + 1]


def enumerate_grid(
    space: Any, key: Callable[[CandidateConfig], str], problem: Callable[[CandidateConfig], str | None]
) -> Grid:
    """The distinct measurable candidates of `space`. `key` identifies what gets measured (the sweep's
    `candidate_key`), `problem` says why a candidate cannot be measured here (`candidate_problem`)."""
    points: list[GridPoint] = []
    seen: set[str] = set()
    rejected: Counter[str] = Counter()
    combinations = duplicates = 0
    for params, candidate in parameter_sets(space):
        combinations += 1
        k = key(candidate)
        if k in seen:
            duplicates += 1
            continue
        seen.add(k)
        reason = problem(candidate)
        if reason:
            rejected[reason] += 1
        else:
            points.append(GridPoint(params, candidate, k))
    return Grid(points, combinations, duplicates, dict(rejected))
