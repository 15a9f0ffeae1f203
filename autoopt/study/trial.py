"""One trial: ask → candidate → reject early, reuse, or build and measure in isolation → tell."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from autoopt.candidate import Prepared, build, measure
from autoopt.config.schema import CandidateConfig, SweepConfig
from autoopt.isolation import JobFailed
from autoopt.space.sample import label, sample
from autoopt.space.validity import environment_problem, target_problem, value_problem
from autoopt.study.objectives import constraints, objectives
from autoopt.study.progress import SweepProgress

log = logging.getLogger("autoopt.study")


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    candidate: CandidateConfig
    reason: str | None = None
    result: dict[str, Any] | None = None
    reused: bool = False


def candidate_key(c: CandidateConfig, prep: Prepared) -> str:
    """Identity of what gets measured: defaults resolved, so threads=0 and threads=<cores> coincide."""
    resolved = replace(c, threads=c.threads or prep.target.cores, batch_size=c.batch_size or prep.workload.batch_size)
    return hashlib.sha256(json.dumps(asdict(resolved), sort_keys=True).encode()).hexdigest()[:16]


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def completed_by_key(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    done: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        done.setdefault(t.user_attrs["candidate_key"], t)
    return done


def run_trial(
    study: optuna.Study,
    prep: Prepared,
    cfg: SweepConfig,
    done: dict[str, optuna.trial.FrozenTrial],
    progress: SweepProgress,
) -> TrialOutcome:
    trial = study.ask()
    candidate = sample(trial, cfg.space)
    name = f"trial {trial.number} · {label(candidate)}"
    trial.set_user_attr("candidate", asdict(candidate))
    trial.set_user_attr("label", label(candidate))

    problem = value_problem(candidate) or target_problem(candidate, prep.target)
    problem = problem or environment_problem(candidate, prep.target)
    if problem:
        trial.set_user_attr("reason", problem)
        study.tell(trial, state=TrialState.PRUNED)
        log.info("%s · pruned: %s", name, problem)
        return TrialOutcome(trial.number, "pruned", candidate, problem)

    key = candidate_key(candidate, prep)
    trial.set_user_attr("candidate_key", key)
    if key in done:
        prior = done[key]
        for attr in ("result", "artifact"):
            trial.set_user_attr(attr, prior.user_attrs[attr])
        for constraint, value in prior.constraints.items():
            trial.set_constraint(constraint, value)
        trial.set_user_attr("reused_from", prior.number)
        study.tell(trial, prior.values)
        done[key] = study.trials[trial.number]
        log.info("%s · same candidate as trial %d: result reused, nothing rebuilt or re-measured", name, prior.number)
        return TrialOutcome(
            trial.number, "complete", candidate, f"reused trial {prior.number}", prior.user_attrs["result"], reused=True
        )

    try:
        progress.step(f"trial {trial.number}: build")
        t0 = time.perf_counter()
        built = build(prep, candidate)
        t_build = time.perf_counter() - t0
        progress.step(f"trial {trial.number}: measure speed, memory, accuracy")
        t0 = time.perf_counter()
        result = measure(prep, candidate, built)
        t_measure = time.perf_counter() - t0
    except JobFailed as e:
        trial.set_user_attr("reason", e.reason)
        trial.set_user_attr("detail", e.detail[-4000:])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("%s · failed: %s", name, e.reason)
        return TrialOutcome(trial.number, "failed", candidate, e.reason)

    values = objectives(result, cfg.search.latency)
    cons = constraints(result, cfg.search, prep.target)
    trial.set_user_attr("result", result.to_dict())
    for constraint, value in cons.items():
        trial.set_constraint(constraint, value)
    trial.set_user_attr("artifact", built["artifact"])
    study.tell(trial, values)
    done[key] = study.trials[trial.number]
    build_note = "cached" if result.build.cached else f"{t_build:.1f}s"
    broken = [constraint for constraint, value in cons.items() if value > 0]
    feasible = f" · infeasible ({', '.join(broken)})" if broken else ""
    log.info(
        "%s · build %s · measure %.1fs · %s %.1f ms · $%.4f/1M · top-1 %.3f%s",
        name, build_note, t_measure, cfg.search.latency, values[0], values[1], result.accuracy.top1_agreement, feasible,
    )
    return TrialOutcome(trial.number, "complete", candidate, None, result.to_dict())
