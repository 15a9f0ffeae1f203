"""The sweep: one Optuna study per (model, target, workload, space), extended by every invocation,
recorded in MLflow (one parent run per invocation, one nested run per trial), ending in a bundle."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from autoopt import pareto
from autoopt.candidate import Prepared, build, prepare
from autoopt.config.schema import CandidateConfig, SearchConfig, SweepConfig
from autoopt.export.bundle import export_bundle
from autoopt.report.tables import flatten
from autoopt.result import MeasureResult
from autoopt.space.sample import reference_params
from autoopt.study.progress import SweepProgress
from autoopt.study.summary import Summary, SweepError, gains, summarize, write_reports
from autoopt.study.trial import completed_by_key, feasible, run_trial
from autoopt.tracking.mlflow_tracker import Tracker

log = logging.getLogger("autoopt.study")

MAX_ASKS_PER_TRIAL = 4


@dataclass(frozen=True)
class SweepOutcome:
    study_name: str
    summary: Summary
    bundle: Path
    reports: list[Path]
    ui_command: str


def make_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=search.seed, population_size=8)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=6)


def study_name(cfg: SweepConfig, prep: Prepared) -> str:
    return cfg.study.name or f"{prep.model.name}-{prep.model.key[-12:]}-{cfg.target.name}-{cfg.workload.name}-{cfg.space.name}"


def open_study(cfg: SweepConfig, name: str, workspace: Path) -> optuna.Study:
    storage = cfg.study.storage or f"sqlite:///{workspace / 'optuna.db'}"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=["minimize"] * 3,
        sampler=make_sampler(cfg.search),
        load_if_exists=True,
    )
    if not study.trials:
        study.enqueue_trial(reference_params(cfg.space))
    return study


def run_sweep(cfg: SweepConfig, resolved_config: dict[str, Any]) -> SweepOutcome:
    workspace = Path(cfg.workspace).expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prep = prepare(cfg.model, cfg.target, cfg.workload, cfg.bench, Path(cfg.cache_dir).expanduser())
    name = study_name(cfg, prep)
    study = open_study(cfg, name, workspace)
    tracker = Tracker(cfg.tracking.uri or f"sqlite:///{workspace / 'mlflow.db'}", name, workspace / "mlartifacts")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    earlier = len([t for t in study.trials if t.state.is_finished()])
    log.info("study %s: %d earlier trials; running %d more", name, earlier, cfg.search.n_trials)

    done = completed_by_key(study)
    progress = SweepProgress(cfg.search.n_trials)
    tags = {"autoopt.study": name, "autoopt.target": cfg.target.name, "autoopt.model_key": prep.model.key}
    with tracker.start_parent(f"sweep-{stamp}", flatten(resolved_config), tags), progress.live():
        new, asked = 0, 0
        # n_trials counts candidates actually built and measured: pruned and reused trials cost nothing,
        # so they do not use up the budget (bounded, for spaces smaller than the budget).
        while new < cfg.search.n_trials and asked < MAX_ASKS_PER_TRIAL * cfg.search.n_trials:
            outcome = run_trial(study, prep, cfg, done, progress)
            asked += 1
            if outcome.number == 0 and outcome.state != "complete":
                raise SweepError(f"the fp32 reference (trial 0) {outcome.state}: {outcome.reason}; nothing to compare to")
            result = outcome.result or {}
            metrics = flatten({k: v for k, v in result.items() if k in ("speed", "memory", "accuracy", "cost", "build")})
            tracker.log_trial(outcome.number, asdict(outcome.candidate), metrics, outcome.state, outcome.reason, result or None)
            if outcome.state == "failed" or (outcome.state == "complete" and not outcome.reused):
                new += 1
                progress.trial_done(_front_size(study))
        progress.step("front, reports, bundle")
        summary = summarize(study, cfg.export.pick, cfg.export.weights, cfg.search.min_top1_agreement)
        reports = write_reports(summary, cfg.search.latency, workspace / "reports" / name / stamp)
        bundle = _export(summary, prep, cfg, resolved_config, workspace, name)
        chosen = {**summary.trials[summary.chosen.key].user_attrs["candidate"], "trial": summary.chosen.key,
                  "reason": summary.reason, "bundle": str(bundle)}
        tracker.log_front(reports, {"hypervolume": summary.hypervolume, "front_size": len(summary.front),
                                    **{f"chosen.{k}": v for k, v in gains(summary).items()}}, chosen)
    return SweepOutcome(name, summary, bundle, reports, tracker.ui_command())


def _front_size(study: optuna.Study) -> int:
    points = [pareto.Point(str(t.number), tuple(t.values)) for t in completed_by_key(study).values() if feasible(t)]
    return len(pareto.front(points))


def _export(s: Summary, prep: Prepared, cfg: SweepConfig, resolved: dict[str, Any], workspace: Path, name: str) -> Path:
    trial = s.trials[s.chosen.key]
    candidate = CandidateConfig(**trial.user_attrs["candidate"])
    artifact = Path(trial.user_attrs["artifact"])
    if not artifact.exists():  # the build cache was cleared since that trial: rebuild, same key
        artifact = Path(build(prep, candidate)["artifact"])
    out = Path(cfg.export.dir) if cfg.export.dir else workspace / "bundles" / name
    result = MeasureResult.from_dict(trial.user_attrs["result"])
    return export_bundle(result, artifact, prep.reference.path, asdict(cfg.workload), resolved, out)
