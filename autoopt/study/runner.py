"""The sweep: an Optuna study over the space, every trial recorded in MLflow, then the front, the pick
and the bundle."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoopt import pareto
from autoopt.bench.profile import format_profile
from autoopt.bundle.write import destination_problem, export_bundle
from autoopt.config.errors import ConfigError
from autoopt.config.knobs import knobs_of, offered
from autoopt.config.schema import CandidateConfig, SearchConfig, SweepConfig
from autoopt.config.serde import to_dict
from autoopt.config.serving import default_traffic_note
from autoopt.jobs.confirm import Confirmation, confirm, side_by_side
from autoopt.jobs.launch import JobFailed, Launcher, SubprocessLauncher
from autoopt.jobs.prepare import Prepared, prepare
from autoopt.locks import sqlite_store_lock
from autoopt.passes.pipeline import artifact_sha256
from autoopt.report.tables import flatten
from autoopt.result import MeasureResult
from autoopt.space.sample import AfterRepeats, OpenerRetries, engine_openers, reference_params
from autoopt.space.validity import (
    decoding_problem_of,
    engine_narrowing,
    inert_under_workload,
    inert_without_load,
    tied_embeddings_problem,
    unavailable_engines,
    unsupported_quants,
)
from autoopt.study.fingerprint import (
    check_fingerprint,
    check_reference,
    check_space,
    fingerprint_digest,
    study_fingerprint,
)
from autoopt.study.objectives import constraints
from autoopt.study.progress import SweepProgress
from autoopt.study.record import keep_remeasured
from autoopt.study.runoff import Runoff, decide
from autoopt.study.summary import (
    Summary,
    SweepError,
    gains,
    runoff_due,
    summarize,
    summary_of,
    write_reports,
)
from autoopt.study.trial import INTERRUPTED, Known, TrialOutcome, feasible, run_trial
from autoopt.study.warm import AUTO, check_named, warm_start_params
from autoopt.tracking.mlflow_tracker import Tracker

log = logging.getLogger("autoopt.study")

MAX_ASKS_PER_TRIAL = 4
_METRIC_GROUPS = ("speed", "memory", "accuracy", "cost", "build", "serving", "roofline")


@dataclass(frozen=True)
class SweepOutcome:
    study_name: str
    summary: Summary
    bundle: Path
    reports: list[Path]
    ui_command: str
    confirmation: Confirmation | None  # the pick against the fp32 reference, timed side by side


def make_sampler(search: SearchConfig, earlier_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded by `search.seed` plus the trials the study already holds: a resumed study seeded
    as at its start would propose its first run's candidates again, each one reused, measuring nothing."""
    seed = search.seed + earlier_trials
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Multivariate, grouped TPE: independent TPE kept re-proposing measured candidates in autoopt's
    # conditional space and stalled (experiments/2026-11-27-search-benchmark.md). Optuna marks both options
    # experimental; chosen on purpose, so the user's console is spared that warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True, group=True)


def study_name(cfg: SweepConfig, prep: Prepared) -> str:
    """`study.name`, or one derived from model, target, workload and space, ending in a digest of the study's
    fingerprint and space choices: rerun unchanged, a command extends its study; after a change (an update of
    autoopt's code, a library, a space override) it starts a new one, warm-started from the earlier studies' fronts,
    where a named study stops in one line."""
    if cfg.study.name:
        return cfg.study.name
    digest = fingerprint_digest(study_fingerprint(cfg, prep), cfg.space)
    return f"{prep.model.name}-{prep.model.key[-12:]}-{cfg.target.name}-{cfg.workload.name}-{cfg.space.name}-{digest}"


def _study_names(storage: str) -> list[str]:
    """The storage's studies; a URL that cannot be opened (unknown scheme, missing driver or folder) in one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.get_all_study_names(storage)
    except (SQLAlchemyError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"study.storage={storage} cannot be opened: {first}; give an RDB URL Optuna can open, "
                          "e.g. sqlite:////abs/path/optuna.db, or leave it empty for the workspace's") from None


def _reference_interrupted(storage: str, name: str) -> bool:
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    first = trials[0] if trials else None
    return (first is not None and first.state == TrialState.FAIL
            and str(first.user_attrs.get("reason", "")).startswith(INTERRUPTED))


def study_storage(cfg: SweepConfig, workspace: Path) -> str:
    return cfg.study.storage or f"sqlite:///{workspace / 'optuna.db'}"


def open_study(
    cfg: SweepConfig, prep: Prepared, name: str, workspace: Path
) -> tuple[optuna.Study, list[dict[str, object]]]:
    """The study, created or resumed, and the engine openers it enqueued (none when resumed)."""
    storage = study_storage(cfg, workspace)
    with sqlite_store_lock(storage):  # two sweeps started at once: one creates the store, then the other
        new = name not in _study_names(storage)
        if not new and _reference_interrupted(storage, name):
            optuna.delete_study(study_name=name, storage=storage)
            log.warning("study %s was stopped during its fp32 reference (trial 0), before anything was measured: "
                        "starting it anew", name)
            new = True
        # before the study exists, so that a bad study name in search.warm_start leaves nothing behind
        sources, warm = (warm_start_params(storage, cfg.search.warm_start, cfg.space, name, prep.model.key)
                         if new else ([], []))
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["minimize"] * 3,
            load_if_exists=True,
        )
        study.sampler = make_sampler(cfg.search, len(study.trials))
        check_fingerprint(study, study_fingerprint(cfg, prep))
        check_space(study, cfg.space)
        check_reference(study, storage)
        if not study.trials:
            study.enqueue_trial(reference_params(cfg.space))
        for params in warm:
            study.enqueue_trial(params, skip_if_exists=True)
        openers = engine_openers(cfg.space, [reference_params(cfg.space), *warm], cfg.search.seed) if new else []
        for params in openers:
            study.enqueue_trial(params)
    if sources:
        log.info("warm start: %d front candidates of %s measured first", len(warm), ", ".join(sources))
    elif new and cfg.search.warm_start:
        log.info("warm start: no earlier study of model %s in the storage; starting cold", prep.model.key)
    return study, openers


def searchable(cfg: SweepConfig, prep: Prepared) -> SweepConfig:
    """`cfg` with the space narrowed to what this machine can measure for the target: engines it can run here (and
    that can sample where the workload does), and quants whose precision the target has; to what changes something under the objective and the workload (the
    batcher's knobs under the serving objective only, mixing prompt lengths only where it has several); on a
    checkpoint with tied embeddings, to the ort_genai int4 levers its builder honours; and, per engine
    (`space.by_engine`), to the quants it runs on the target's device and the batching it can do there. Each value
    left out is logged with its reason (the study's fingerprint records the target and the libraries, so a later
    install is a new study). Raises `SweepError` when no engine is left."""
    dropped = unavailable_engines(cfg.space.engine, prep.target)
    dropped |= {e: why for e in cfg.space.engine if e not in dropped and (why := decoding_problem_of(e, cfg.workload))}
    quants = unsupported_quants(cfg.space.quant, prep.target)
    for reason in [*dropped.values(), *quants.values()]:
        log.warning("not searched here: %s", reason)
    space = replace(cfg.space, engine=[e for e in cfg.space.engine if e not in dropped],
                    quant=[q for q in cfg.space.quant if q not in quants])
    narrowed = inert_without_load(space, cfg.search)
    inert = inert_under_workload(space.serving_mix_lengths, cfg.workload)
    if inert and "serving_mix_lengths" not in narrowed:
        narrowed["serving_mix_lengths"] = ([False], inert)
    if prep.model.tied_embeddings:
        narrowed |= tied_embedding_levers(space)
    for name, (values, reason) in narrowed.items():
        log.warning("not searched here: %s", reason)
        space = replace(space, **{name: values})
    # the space's own per-engine values of a knob narrowed above give way: that knob is settled for every engine
    by_engine = {engine: {name: [v for v in values if offered(v, getattr(space, name))]
                          for name, values in knobs.items() if name not in narrowed}
                 for engine, knobs in space.by_engine.items() if engine in space.engine}
    for engine, knobs in engine_narrowing(space, prep.target, prep.model.traits).items():
        for name, (values, reason) in knobs.items():
            log.warning("not searched here: %s", reason)
            by_engine.setdefault(engine, {})[name] = values
    emptied = {engine: [name for name, values in knobs.items() if not values] for engine, knobs in by_engine.items()}
    emptied = {engine: names for engine, names in emptied.items() if names}
    for engine, names in emptied.items():
        log.warning("not searched here: engine=%s, which has no value of %s left to search", engine, ", ".join(names))
    kept = [engine for engine in space.engine if engine not in emptied]
    if not kept:
        raise SweepError(f"no engine of space={cfg.space.name} can be measured here for target={cfg.target.name}")
    by_engine = {engine: knobs for engine, knobs in by_engine.items() if engine in kept}
    space = replace(space, engine=kept, by_engine=by_engine)
    return cfg if space == cfg.space else replace(cfg, space=space)


def tied_embedding_levers(space: Any) -> dict[str, tuple[list[Any], str]]:
    """For each ort_genai int4 lever of `space` with values `tied_embeddings_problem` refuses on a checkpoint with
    tied embeddings: the values left to search (the knob's first accepted choice where none is), and why the
    others are not searched."""
    if "ort_genai" not in space.engine or "int4" not in space.quant:
        return {}
    probe = CandidateConfig(engine="ort_genai", quant="int4", quant_embeddings="int4")  # accepted: one knob varies
    out = {}
    for name in ("quant_lm_head", "quant_embeddings"):
        problems = {v: tied_embeddings_problem(replace(probe, **{name: v})) for v in knobs_of(CandidateConfig)[name].choices}
        refused = [v for v in getattr(space, name) if problems[v]]
        if refused:
            kept = [v for v in getattr(space, name) if not problems[v]] or [next(v for v in problems if not problems[v])]
            out[name] = (kept, f"{name}={','.join(refused)} ({problems[refused[0]]})")
    return out


def run_sweep(cfg: SweepConfig, resolved_config: dict[str, Any], launcher: Launcher | None = None) -> SweepOutcome:
    launcher = launcher or SubprocessLauncher()
    if cfg.export.dir and (problem := destination_problem(Path(cfg.export.dir), f"export.dir={cfg.export.dir}")):
        raise ConfigError(problem)  # before the sweep, not after it
    workspace = Path(cfg.workspace).expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if any(name != AUTO for name in cfg.search.warm_start):  # a name the storage lacks: before the model work
        storage = study_storage(cfg, workspace)
        with sqlite_store_lock(storage):
            check_named(cfg.search.warm_start, set(_study_names(storage)))
    serving = cfg.search.objective == "serving"
    if serving and (note := default_traffic_note(cfg.workload.name, cfg.workload.serving)):
        log.warning("%s", note)
    prep = prepare(cfg.model, cfg.target, cfg.workload, cfg.bench, Path(cfg.cache_dir).expanduser(), serving=serving)
    cfg = searchable(cfg, prep)
    name = study_name(cfg, prep)
    study, openers = open_study(cfg, prep, name, workspace)
    retries = OpenerRetries(openers)
    tracker = Tracker(cfg.tracking.uri or f"sqlite:///{workspace / 'mlflow.db'}", name, workspace / "mlartifacts")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    earlier = len([t for t in study.trials if t.state.is_finished()])
    log.info("study %s: %d earlier trials; running %d more", name, earlier, cfg.search.n_trials)

    known = Known.of(study)
    progress = SweepProgress(cfg.search.n_trials, _front_size(known))
    tags = {"autoopt.study": name, "autoopt.target": cfg.target.name, "autoopt.model_key": prep.model.key}
    with tracker.start_parent(f"sweep-{stamp}", flatten(resolved_config), tags), progress.live():
        new, asked = 0, 0
        # n_trials counts candidates actually built and measured: pruned and reused trials cost nothing,
        # so they do not use up the budget (bounded, for spaces smaller than the budget).
        after = AfterRepeats(study.sampler, cfg.search.seed)  # trial numbers go on across a resumed study's runs
        while new < cfg.search.n_trials and asked < MAX_ASKS_PER_TRIAL * cfg.search.n_trials:
            outcome = run_trial(study, prep, cfg, known, launcher, progress)
            asked += 1
            study.sampler = after.next(outcome.reused, outcome.number)
            if again := retries.after(outcome.record.candidate.engine, outcome.state == "pruned"):
                study.enqueue_trial(again)
            _log_trial(tracker, outcome)
            if outcome.number == 0 and outcome.state != "complete":
                raise SweepError(
                    f"the fp32 reference (trial 0) {outcome.state}: {outcome.record.reason}; nothing to compare to"
                )
            if outcome.state in ("failed", "complete") and not outcome.reused:
                new += 1
                progress.trial_done(_front_size(known))
        if new < cfg.search.n_trials:
            log.warning(
                "stopped after %d proposals with %d of %d candidates measured: the others proposed were pruned or "
                "measured before (the space may hold few more candidates the target can run, or the sampler kept to "
                "the region it measured)", asked, new, cfg.search.n_trials,
            )
        progress.step("front, reports")
        summary = with_artifacts(summarize(study, cfg.search, cfg.export, prep.target), prep, cfg, launcher, study)
        runoff = _runoff(summary, prep, cfg, launcher, progress)
        if runoff is not None:
            summary = replace(summary, chosen=runoff.chosen, reason=runoff.reason)
        reports = write_reports(summary, cfg.search, workspace / "reports" / name / stamp)
        out = Path(cfg.export.dir) if cfg.export.dir else workspace / "bundles" / name
        # Confirmed before the export, so that the bundle carries the ratio to quote; a confirmation that fails
        # still leaves the bundle, without it.
        try:
            confirmation = _confirm(summary, prep, cfg, launcher, progress)
        except SweepError:
            progress.step("bundle")
            export_measured(summary, prep, cfg, resolved_config, out, launcher, study=name)
            raise
        progress.step("bundle")
        bundle = export_measured(summary, prep, cfg, resolved_config, out, launcher, study=name,
                                 confirmed=confirmed_block(confirmation, summary))
        chosen = {**to_dict(summary.records[summary.chosen.key].candidate), "trial": summary.chosen.key,
                  "reason": summary.reason, "bundle": str(bundle)}
        tracker.log_front(reports, {"hypervolume": summary.hypervolume, "front_size": len(summary.front),
                                    **{f"chosen.{k}": v for k, v in gains(summary).items()},
                                    **_confirmation_metrics(confirmation), **_runoff_metrics(runoff)}, chosen)
    return SweepOutcome(name, summary, bundle, reports, tracker.ui_command(), confirmation)


def _confirm(
    s: Summary, prep: Prepared, cfg: SweepConfig, launcher: Launcher, progress: SweepProgress
) -> Confirmation | None:
    if cfg.search.confirm_rounds == 0 or s.chosen.key == s.reference.key:
        return None
    progress.step(f"confirm: fp32 reference and trial {s.chosen.key} timed alternately")
    reference, chosen = s.records[s.reference.key].result, s.records[s.chosen.key].result
    assert reference is not None and chosen is not None
    try:
        confirmation = confirm(prep, reference, chosen, cfg.search.latency, launcher, cfg.search.confirm_rounds)
    except JobFailed as e:
        raise _failed_after_trials(e, f"timing trial {s.chosen.key} against the fp32 reference", cfg) from e
    log.info("confirmed side by side: %s tokens/s, %s lower %s; other processes took up to %.0f %% of the CPUs "
             "during a run", confirmation.speedup, confirmation.latency_gain, cfg.search.latency,
             100 * confirmation.other_cpu_share)
    if confirmation.contended:
        log.warning("other work took up to %.0f %% of this machine's CPUs while the side-by-side ran: its ratio may "
                    "say as much about that work as about the candidates; rerun on a quiet machine",
                    100 * confirmation.other_cpu_share)
    return confirmation


def _runoff(
    s: Summary, prep: Prepared, cfg: SweepConfig, launcher: Launcher, progress: SweepProgress
) -> Runoff | None:
    """pick=fastest with the latency objective: time the front candidates within the margin side by side."""
    if not runoff_due(cfg.search, cfg.export):
        return None
    contenders = pareto.contenders(s.front, cfg.export.runoff_margin)
    if len(contenders) < 2:
        return None
    keys = ", ".join(p.key for p in contenders)
    progress.step(f"runoff: trials {keys} (within {cfg.export.runoff_margin:.0%} of the fastest) timed side by side")
    results = [r for p in contenders if (r := s.records[p.key].result) is not None]
    assert len(results) == len(contenders)  # the front holds complete trials only; decide() pairs them by index
    try:
        samples = side_by_side(prep, results, launcher, cfg.search.confirm_rounds)
    except JobFailed as e:
        raise _failed_after_trials(e, f"the runoff of trials {keys}", cfg) from e
    runoff = decide(contenders, samples, cfg.search.latency, cfg.export.runoff_min_gain)
    log.info("runoff of trials %s: %s", keys, runoff.reason)
    return runoff


def _failed_after_trials(
    e: JobFailed, step: str, cfg: SweepConfig, fix: str = "search.confirm_rounds=0 skips the timings after the trials"
) -> SweepError:
    """A child failing after the trials ends the sweep in one line; its traceback goes to the workspace's logs."""
    log_file = e.save_log(cfg.workspace, "sweep")
    return SweepError(
        f"{step} failed: {e.reason} (the child's traceback is in {log_file}); the trials are kept in the study; {fix}"
    )


def _runoff_metrics(r: Runoff | None) -> dict[str, float]:
    if r is None:
        return {}
    return {"runoff.contenders": float(len(r.contenders)),
            **{f"runoff.gain.{key}.{stat}": getattr(g, stat) for key, g in r.gains.items()
               for stat in ("median", "low", "high")}}


def confirmed_block(c: Confirmation | None, s: Summary) -> dict[str, Any] | None:
    """The side-by-side confirmation as the bundle's manifest records it (`measured_in.confirmed`)."""
    if c is None:
        return None
    ratios = {name: {"median": r.median, "low": r.low, "high": r.high, "rounds": r.rounds}
              for name, r in (("output_tokens_per_s", c.speedup), (f"lower_{c.latency}", c.latency_gain))}
    return {"against": s.reference.payload["candidate"], "batches": list(c.batches), **ratios,
            "other_cpu_share_max": c.other_cpu_share, "contended": c.contended,
            "method": "the fp32 reference and this candidate timed alternately, each run in a fresh process; "
                      "per-round ratios (times better), their median and range"}


def _confirmation_metrics(c: Confirmation | None) -> dict[str, float]:
    if c is None:
        return {}
    return {**{f"confirm.{name}.{stat}": getattr(ratio, stat)
               for name, ratio in (("speedup", c.speedup), ("latency_gain", c.latency_gain))
               for stat in ("median", "low", "high")},
            "confirm.other_cpu_share.max": c.other_cpu_share}


def _log_trial(tracker: Tracker, outcome: TrialOutcome) -> None:
    record = outcome.record
    result = record.result.to_dict() if record.result else None
    metrics = flatten({k: v for k, v in (result or {}).items() if k in _METRIC_GROUPS})
    profile = record.result.profile if record.result else None
    texts = {"profile.md": format_profile(profile)} if profile else None
    tracker.log_trial(outcome.number, to_dict(record.candidate), metrics, outcome.state, record.reason, result, texts)


def _front_size(known: Known) -> int:
    points = [pareto.Point(str(t.number), tuple(t.values)) for t in known.complete.values() if feasible(t)]
    return len(pareto.front(points))


def with_artifacts(s: Summary, prep: Prepared, cfg: SweepConfig, launcher: Launcher, study: optuna.Study) -> Summary:
    """`s`, the summary of `study`, with the artifacts of the trials the steps after the search load (the chosen one,
    the runoff's contenders, the reference where the confirmation times it) on disk as measured (`_with_artifact`).
    A trial measured again there moves its point, so the front and the pick are taken again from the new figures,
    and the artifacts that pick calls on are checked in turn. The new figures are kept on `study`: its next run
    finds the rebuilt folder where the trial's artifact was, and must take it for the one measured."""
    while due := sorted(_loaded_after_search(s, cfg) - s.checked, key=int):
        records, remeasured = dict(s.records), set(s.remeasured)
        for key in due:
            before = records[key].result
            assert before is not None
            after = _with_artifact(key, before, prep, cfg, launcher)
            if after.build.sha256 != before.build.sha256:
                keep_remeasured(study, key, after)
                remeasured.add(key)
                log.warning("trial %s's new figures stand in the front, the pick and the bundle from here on, in "
                            "this run and the study's next ones; its MLflow run keeps those it was first measured "
                            "with", key)
            records[key] = replace(records[key], result=after)
        checked = s.checked | set(due)
        if remeasured != s.remeasured:
            s = summary_of(records, cfg.search, cfg.export, prep.target)
        s = replace(s, records=records, checked=checked, remeasured=frozenset(remeasured))
    return s


def _loaded_after_search(s: Summary, cfg: SweepConfig) -> set[str]:
    keys = {s.chosen.key}
    if cfg.search.confirm_rounds > 0:
        keys.add(s.reference.key)
    if runoff_due(cfg.search, cfg.export):
        keys |= {p.key for p in pareto.contenders(s.front, cfg.export.runoff_margin)}
    return keys


def _with_artifact(key: str, result: MeasureResult, prep: Prepared, cfg: SweepConfig, launcher: Launcher) -> MeasureResult:
    """`result` with its artifact on disk, its files hashing as when measured. One gone (a cleared build cache) is
    rebuilt: where the rebuild hashes the same, the figures stand; otherwise it is measured again, and must still
    meet the search's constraints. One changed in place is refused."""
    artifact = Path(result.build.artifact)
    if artifact.is_dir():
        if artifact_sha256(artifact) != result.build.sha256:
            raise SweepError(
                f"{artifact} changed since trial {key} measured it; remove that folder and run the same command "
                "again: the candidate is then rebuilt and measured anew"
            )
        return result
    log.warning("trial %s's artifact is gone (build cache cleared?): rebuilding it", key)
    try:
        built = launcher.launch(prep.build_job(result.candidate))
        if built.sha256 == result.build.sha256:
            return replace(result, build=replace(result.build, artifact=built.artifact))
        log.warning("trial %s's rebuilt artifact differs from the one measured: measuring it again", key)
        result = launcher.launch(prep.measure_job(result.candidate, built))
    except JobFailed as e:
        raise _failed_after_trials(e, f"rebuilding trial {key}", cfg, "run the same command again to retry") from e
    broken = [name for name, value in constraints(result, cfg.search, prep.target).items() if value > 0]
    if broken and key != "0":  # the fp32 reference is the yardstick, feasible or not
        raise SweepError(
            f"trial {key}, rebuilt and measured again, no longer meets {', '.join(broken)}; its artifact differs "
            "from the one the search measured (a changed pass or library?): start a new study"
        )
    return result


def export_measured(
    s: Summary,
    prep: Prepared,
    cfg: SweepConfig,
    resolved: dict[str, Any],
    out: Path,
    launcher: Launcher,
    study: str | None = None,
    confirmed: dict[str, Any] | None = None,
) -> Path:
    """Export the chosen candidate with exactly what was measured: the same reference file, and an artifact
    whose files hash as they did when measured (`_with_artifact`, unless `with_artifacts` already saw to it;
    the bundle carries a re-measurement's figures, and its manifest says so), and `confirmed`, its side-by-side
    confirmation (`confirmed_block`), where one ran."""
    measured = s.records[s.chosen.key].result
    assert measured is not None
    if measured.reference_sha256 != prep.reference_sha256:
        raise SweepError(
            f"trial {s.chosen.key} was measured against another reference file than {prep.reference.path}; "
            "start a new study"
        )
    result = measured if s.chosen.key in s.checked else _with_artifact(s.chosen.key, measured, prep, cfg, launcher)
    again = s.chosen.key in s.remeasured or result.build.sha256 != measured.build.sha256
    return export_bundle(result, Path(result.build.artifact), prep.reference.path, asdict(cfg.workload), resolved, out,
                         measured_in={"study": study, "trial": int(s.chosen.key), "measured_again": again,
                                      **({"confirmed": confirmed} if confirmed else {})})
