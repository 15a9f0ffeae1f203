"""Replay a sampler against the ground truth: the sweep's loop with every measurement looked up.

As in `autoopt.study.runner.run_sweep`: the parameters come from `sample` (the same conditional names),
the fp32 reference is enqueued as trial 0, then any warm start, then one trial on each engine not yet
covered (`engine_openers`, enqueued again while pruned: `OpenerRetries`), a candidate the target cannot
run is pruned and costs nothing, a candidate measured before is told its earlier values and costs nothing,
a failure counts as measured, and a sweep with `n_trials = k` stops after k distinct measured candidates
or 4k asks, whichever comes first. After each k the hypervolume of the feasible front found so far is divided by
the grid's, both against the sweep's reference point (fp32 latency, fp32 cost, 1 - the accuracy bar).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from autoopt import pareto
from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig, SearchConfig, TargetConfig
from autoopt.result import MeasureResult
from autoopt.searchbench.grid import GridPoint
from autoopt.searchbench.samplers import SAMPLERS
from autoopt.space.sample import AfterRepeats, OpenerRetries, engine_openers, fitted_params, reference_params, sample
from autoopt.study.objectives import constraints, hypervolume_reference, objectives
from autoopt.study.warm import front_params

log = logging.getLogger("autoopt.searchbench")

ASKS_PER_TRIAL = 4  # as autoopt.study.runner.MAX_ASKS_PER_TRIAL (a test keeps them equal)


@dataclass(frozen=True)
class Outcome:
    """A grid candidate as the study sees it: objective values and constraint values, or a failure."""

    values: tuple[float, float, float] | None  # None: the build or measurement failed
    constraints: dict[str, float]

    @property
    def feasible(self) -> bool:
        return self.values is not None and all(v <= 0 for v in self.constraints.values())


@dataclass(frozen=True)
class Bench:
    """What a replay needs: the space, each grid candidate's outcome by key, how to key and check a
    sampled candidate, the hypervolume reference point and the grid's own hypervolume."""

    space: Any
    outcomes: dict[str, Outcome]
    key: Callable[[CandidateConfig], str]
    problem: Callable[[CandidateConfig], str | None]
    hv_reference: tuple[float, float, float]
    grid_hypervolume: float
    grid_front: list[pareto.Point]

    @classmethod
    def of(
        cls,
        points: Sequence[GridPoint],
        results: Mapping[str, MeasureResult | str],
        space: Any,
        search: SearchConfig,
        target: TargetConfig,
        key: Callable[[CandidateConfig], str],
        problem: Callable[[CandidateConfig], str | None],
    ) -> Bench:
        """`results` holds every grid point's measurement by key, or the reason it failed (a string)."""
        missing = [p.key for p in points if p.key not in results]
        if missing:
            raise ConfigError(
                f"the ground truth lacks {len(missing)} of {len(points)} grid candidates; measure them first "
                "(run python -m autoopt.searchbench with the same overrides, without --replay options)"
            )
        outcomes = outcomes_of({p.key: results[p.key] for p in points}, search, target)
        ref = reference_candidate(space)
        ref_outcome = outcomes.get(key(ref))
        if ref_outcome is None or ref_outcome.values is None:
            raise ConfigError("the fp32 reference has no measurement in the ground truth: nothing to compare to")
        hv_ref = hypervolume_reference(ref_outcome.values[0], ref_outcome.values[1], search)
        feasible = [pareto.Point(k, o.values) for k, o in outcomes.items() if o.feasible and o.values]
        front = pareto.front(feasible)
        grid_hv = pareto.hypervolume([p.objectives for p in front], hv_ref)
        if grid_hv <= 0:
            raise ConfigError("no grid candidate improves on the fp32 reference within the accuracy bar: "
                              "the grid's hypervolume is 0, so fractions of it mean nothing")
        return cls(space, outcomes, key, problem, hv_ref, grid_hv, front)


def outcomes_of(
    results: Mapping[str, MeasureResult | str], search: SearchConfig, target: TargetConfig
) -> dict[str, Outcome]:
    """Each measurement's objective and constraint values under `search`; a string (failure reason) fails."""
    return {k: Outcome(None, {}) if isinstance(r, str) else Outcome(objectives(r, search), constraints(r, search, target))
            for k, r in results.items()}


def reference_candidate(space: Any) -> CandidateConfig:
    return sample(optuna.trial.FixedTrial(reference_params(space)), space)


@dataclass(frozen=True)
class Curve:
    """One replay. `fraction[k]` is the hypervolume fraction a sweep with n_trials = k ends with
    (k = 0 .. max_trials); `asks[k]` how many trials it asked for to get there; `measured[k]` how many
    distinct candidates it measured (less than k when the sampler kept proposing measured ones until the
    sweep's ask budget ran out)."""

    sampler: str
    seed: int
    fraction: list[float]
    asks: list[int]
    measured: list[int]

    def trials_to(self, level: float) -> int | None:
        """The least n_trials whose sweep reaches `level` of the grid's hypervolume; None if none here."""
        return next((k for k, f in enumerate(self.fraction) if f >= level - 1e-12), None)


def replay(
    bench: Bench,
    sampler_name: str,
    seed: int,
    max_trials: int,
    ask_factor: int = ASKS_PER_TRIAL,
    warm: Sequence[dict[str, Any]] = (),
) -> Curve:
    """Run the sweep's loop with `sampler_name` seeded with `seed`, up to `max_trials` measured
    candidates or `ask_factor * max_trials` asks; deterministic for a given seed. `warm`: parameter sets
    enqueued after the reference, as `search.warm_start` does (each is measured, so each counts)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = SAMPLERS[sampler_name](seed)
        study = optuna.create_study(directions=["minimize"] * 3, sampler=sampler)
    reference = reference_params(bench.space)
    study.enqueue_trial(reference)
    for params in warm:
        study.enqueue_trial(params, skip_if_exists=True)
    openers = engine_openers(bench.space, [reference, *warm], seed)
    for params in openers:
        study.enqueue_trial(params)
    retries = OpenerRetries(openers)
    after = AfterRepeats(sampler, seed)
    seen: dict[str, Outcome] = {}
    found: list[pareto.Point] = []
    events: list[tuple[int, float]] = []  # per newly measured candidate: (asks so far, hypervolume so far)
    asks = 0
    while len(seen) < max_trials and asks < ask_factor * max_trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = study.ask()
            asks += 1
            candidate = sample(trial, bench.space)
            pruned = bool(bench.problem(candidate))
            if again := retries.after(candidate.engine, pruned):
                study.enqueue_trial(again)
            if pruned:
                study.tell(trial, state=TrialState.PRUNED)
                study.sampler = after.next(False, trial.number)  # as the sweep: a pruned proposal is no repeat
                continue
            key = bench.key(candidate)
            new = key not in seen
            outcome = seen.setdefault(key, bench.outcomes[key])
            if outcome.values is None:  # a repeat of a failure is told pruned, as `study.trial` does
                study.tell(trial, state=TrialState.FAIL if new else TrialState.PRUNED)
            else:
                for name, value in outcome.constraints.items():
                    trial.set_constraint(name, value)
                study.tell(trial, list(outcome.values))
            study.sampler = after.next(not new, trial.number)
        if not new:
            continue
        if outcome.feasible and outcome.values is not None:
            found = pareto.front([*found, pareto.Point(key, outcome.values)])
        hv = pareto.hypervolume([p.objectives for p in found], bench.hv_reference) if found else 0.0
        events.append((asks, hv / bench.grid_hypervolume))
    fraction, ask_counts, measured = [0.0], [0], [0]
    for k in range(1, max_trials + 1):
        # a sweep with n_trials = k stops at k measured candidates or ask_factor * k asks
        done = [e for i, e in enumerate(events) if i < k and e[0] <= ask_factor * k]
        fraction.append(done[-1][1] if done else 0.0)
        ask_counts.append(done[-1][0] if done else 0)
        measured.append(len(done))
    return Curve(f"{sampler_name}+warm" if warm else sampler_name, seed, fraction, ask_counts, measured)


def replay_all(
    bench: Bench,
    samplers: Sequence[str],
    seeds: Iterable[int],
    max_trials: int,
    say: Callable[[str], None] = log.info,
    warm: Sequence[dict[str, Any]] = (),
) -> dict[str, list[Curve]]:
    """Every sampler over every seed; with `warm`, each sampler also warm-started (named `<sampler>+warm`)."""
    seeds = list(seeds)
    out: dict[str, list[Curve]] = {}
    for name in samplers:
        for tag, start in ((name, ()), (f"{name}+warm", warm)) if warm else ((name, ()),):
            t0 = time.perf_counter()
            out[tag] = [replay(bench, name, seed, max_trials, warm=start) for seed in seeds]
            say(f"replayed {tag} over {len(seeds)} seeds in {time.perf_counter() - t0:.1f}s")
    return out


def prior_front(
    outcomes: Mapping[str, Outcome], params: Mapping[str, dict[str, Any]], space: Any
) -> list[dict[str, Any]]:
    """The parameters of another ground truth's feasible front (its `outcomes` under this run's objectives,
    `params` by key) that `space` can produce: what `search.warm_start` would enqueue from that study."""
    pairs = [(params[k], o.values) for k, o in outcomes.items() if o.feasible and o.values is not None]
    return [fitted for p in front_params(pairs) if (fitted := fitted_params(p, space)) is not None]
