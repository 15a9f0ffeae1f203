"""One trial: ask -> candidate -> reject early, reuse, or build and measure in isolation -> tell."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace

import optuna
from optuna.trial import TrialState

from autoopt.config.knobs import label
from autoopt.config.schema import CandidateConfig, SweepConfig
from autoopt.jobs.launch import JobFailed, Launcher
from autoopt.jobs.prepare import Prepared
from autoopt.progress import listening
from autoopt.signals import signals_held
from autoopt.space.sample import sample
from autoopt.space.validity import candidate_problem
from autoopt.study.objectives import constraints, objective_labels, objectives
from autoopt.study.progress import SweepProgress
from autoopt.study.record import TrialRecord

log = logging.getLogger("autoopt.study")


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    record: TrialRecord

    @property
    def reused(self) -> bool:
        return self.record.reused_from is not None


@dataclass
class Known:
    """What the study has already done, by candidate key: complete trials (reused, never re-measured)
    and failures (never rebuilt in the same study)."""

    complete: dict[str, optuna.trial.FrozenTrial] = field(default_factory=dict)
    failed: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (trial number, reason)

    @classmethod
    def of(cls, study: optuna.Study) -> Known:
        known = cls()
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            record = TrialRecord.read(t) if TrialRecord.present(t) else None
            if record is None or record.key is None:
                continue
            if t.state == TrialState.COMPLETE:
                known.complete.setdefault(record.key, t)
            elif record.reused_from is None:
                known.failed.setdefault(record.key, (t.number, record.reason or "failed"))
        return known


def candidate_key(c: CandidateConfig, prep: Prepared) -> str:
    """Identity of what gets measured: defaults resolved, so threads=0 and threads=<cores> coincide."""
    resolved = replace(c, threads=c.threads or prep.target.cores, batch_size=c.batch_size or prep.workload.batch_size)
    return hashlib.sha256(json.dumps(asdict(resolved), sort_keys=True).encode()).hexdigest()[:16]


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def run_trial(
    study: optuna.Study,
    prep: Prepared,
    cfg: SweepConfig,
    known: Known,
    launcher: Launcher,
    progress: SweepProgress | None = None,
) -> TrialOutcome:
    trial = None
    try:
        trial = study.ask()
        return _run(study, trial, prep, cfg, known, launcher, progress)
    except BaseException as e:  # a signal (autoopt.signals.Stopped), Ctrl-C, a bug: the trial must not stay RUNNING
        if trial is not None:
            interrupted(study, trial, e)
        raise


INTERRUPTED = "interrupted"


def interrupted(study: optuna.Study, trial: optuna.Trial, error: BaseException) -> None:
    """Record `trial`, if it is still running, as failed by what stopped the sweep: not a failure of its candidate,
    so a later run proposes it again. A trial already told (the signal came after) is left as it was."""
    if study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING:
        return
    with signals_held():  # a second Ctrl-C here would leave the trial RUNNING
        TrialRecord.interrupted(trial, f"{INTERRUPTED}: {type(error).__name__}: {error}".removesuffix(": "))
        study.tell(trial, state=TrialState.FAIL)


def _run(
    study: optuna.Study,
    trial: optuna.Trial,
    prep: Prepared,
    cfg: SweepConfig,
    known: Known,
    launcher: Launcher,
    progress: SweepProgress | None,
) -> TrialOutcome:
    candidate = sample(trial, cfg.space)
    record = TrialRecord(candidate, label(candidate))
    record.write(trial)
    name = f"trial {trial.number} · {record.label}"

    problem = candidate_problem(candidate, prep.target, prep.model.traits, prep.workload)
    if problem:
        return _prune(study, trial, record, problem, name)

    record = replace(record, key=candidate_key(candidate, prep))
    if record.key in known.complete:
        return _reuse(study, trial, record, known, name)
    if record.key in known.failed:
        number, reason = known.failed[record.key]
        return _fail(study, trial, replace(record, reason=reason, reused_from=number), name, note=f"as trial {number}")

    try:
        _step(progress, f"trial {trial.number}: build")
        t0 = time.perf_counter()
        with _told(progress, f"trial {trial.number}: build"):
            built = launcher.launch(prep.build_job(candidate))
        t_build = time.perf_counter() - t0
        _step(progress, f"trial {trial.number}: measure speed, memory, accuracy")
        t0 = time.perf_counter()
        with _told(progress, f"trial {trial.number}: measure"):
            result = launcher.launch(prep.measure_job(candidate, built))
        t_measure = time.perf_counter() - t0
    except JobFailed as e:
        known.failed[record.key] = (trial.number, e.reason)  # type: ignore[index]
        return _fail(study, trial, replace(record, reason=e.reason, detail=e.detail[-4000:]), name)

    values = objectives(result, cfg.search)
    cons = constraints(result, cfg.search, prep.target)
    record = replace(record, result=result)
    record.write(trial)
    for constraint, value in cons.items():
        trial.set_constraint(constraint, value)
    study.tell(trial, values)
    known.complete[record.key] = study.trials[trial.number]  # type: ignore[index]
    build_note = "cached" if built.cached else f"{t_build:.1f}s"
    broken = [constraint for constraint, value in cons.items() if value > 0]
    verdict = f" · infeasible ({', '.join(broken)})" if broken else ""
    sampled = result.accuracy.sampled_agreement
    busy = (f" · contended: other processes took {result.busiest_share():.0%} of the CPUs"
            if result.contended() else "")
    log.info(
        "%s · build %s · measure %.1fs · %s %.4g · $%.4f/1M · top-1 %.3f%s%s%s",
        name, build_note, t_measure, objective_labels(cfg.search)[0], values[0], values[1],
        result.accuracy.top1_agreement, "" if sampled is None else f" · sampled {sampled:.3f}", verdict, busy,
    )
    return TrialOutcome(trial.number, "complete", record)


def _step(progress: SweepProgress | None, text: str) -> None:
    if progress is not None:
        progress.step(text)


def _told(progress: SweepProgress | None, doing: str) -> AbstractContextManager[None]:
    """While a job runs, each step it says (`autoopt.progress`) on the sweep's live line, after `doing`."""
    if progress is None:
        return nullcontext()
    return listening(lambda step: progress.step(f"{doing} · {step}"))


def _prune(study: optuna.Study, trial: optuna.Trial, record: TrialRecord, problem: str, name: str) -> TrialOutcome:
    record = replace(record, reason=problem)
    record.write(trial)
    study.tell(trial, state=TrialState.PRUNED)
    log.info("%s · pruned: %s", name, problem)
    return TrialOutcome(trial.number, "pruned", record)


def _reuse(study: optuna.Study, trial: optuna.Trial, record: TrialRecord, known: Known, name: str) -> TrialOutcome:
    prior = known.complete[record.key]  # type: ignore[index]
    record = replace(record, result=TrialRecord.read(prior).result, reused_from=prior.number,
                     reason=f"reused trial {prior.number}")
    record.write(trial)
    for constraint, value in prior.constraints.items():
        trial.set_constraint(constraint, value)
    study.tell(trial, prior.values)
    log.info("%s · same candidate as trial %d: result reused, nothing rebuilt or re-measured", name, prior.number)
    return TrialOutcome(trial.number, "complete", record)


def _fail(
    study: optuna.Study, trial: optuna.Trial, record: TrialRecord, name: str, note: str = ""
) -> TrialOutcome:
    record.write(trial)
    # A repeat of a known failure is told pruned: samplers learn nothing from failed trials, so the first one's
    # FAIL alone kept TPE proposing that candidate; it stays the record `Known` reads.
    study.tell(trial, state=TrialState.PRUNED if record.reused_from is not None else TrialState.FAIL)
    if note:
        log.warning("%s · failed %s, not rebuilt: %s", name, note, record.reason)
    else:
        log.warning("%s · failed: %s", name, record.reason)
    return TrialOutcome(trial.number, "failed", record)
