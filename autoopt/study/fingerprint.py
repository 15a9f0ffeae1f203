"""What a study's measurements depend on. Earlier trials are reused only under the same fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from autoopt.config.errors import ConfigError
from autoopt.config.schema import SweepConfig, workload_record
from autoopt.digest import package_digest
from autoopt.env import console_script, cpu_model, library_versions
from autoopt.jobs.prepare import Prepared
from autoopt.space.sample import param_choices

FINGERPRINT_ATTR = "fingerprint"


def study_fingerprint(cfg: SweepConfig, prep: Prepared) -> dict[str, Any]:
    """Objectives, accuracy bar, target (price, cores, memory), workload, bench settings, model and
    reference, library versions, autoopt's own code and machine: a change in any of them makes earlier figures
    stale (a fixed pass or engine would otherwise keep its old figures, and failures, in the study)."""
    return {
        "objectives": {
            "objective": cfg.search.objective,
            "latency": cfg.search.latency,
            "min_top1_agreement": cfg.search.min_top1_agreement,
            "min_decode_prefix_agreement": cfg.search.min_decode_prefix_agreement,
            "min_decode_self_agreement": cfg.search.min_decode_self_agreement,
        },
        "target": asdict(prep.target),
        "workload": workload_record(prep.workload),
        "bench": asdict(prep.bench),
        "model": prep.model.key,
        "reference_sha256": prep.reference_sha256,
        "libraries": library_versions(),
        "code": package_digest("autoopt"),
        "machine": cpu_model(),
    }


def fingerprint_digest(fingerprint: dict[str, Any], space: Any) -> str:
    """Eight hex digits that change with the fingerprint or the space's choices: the tail of a derived study name."""
    text = json.dumps([fingerprint, asdict(space)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def check_fingerprint(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    """Record the fingerprint on a new study; refuse, in one line, to extend one measured under another."""
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        return
    changed = [key for key in fingerprint if recorded.get(key) != _plain(fingerprint[key])]
    if changed:
        raise ConfigError(
            f"study {study.study_name} was measured under other {', '.join(changed)}; its figures would be stale: "
            f"start a new study with study.name=<new name> (or remove this one from its storage)"
        )


def check_space(study: optuna.Study, space: Any) -> None:
    """Refuse, in one line, to extend a study over a space (as narrowed for this machine) that offers one of its
    parameters other choices than its trials had. Optuna's samplers fix each parameter's choices within a study:
    a trial asking for others would fail with "CategoricalDistribution does not support dynamic value space"."""
    trials = study.get_trials(deepcopy=False)
    recorded: dict[str, Any] = {}
    for trial in trials:
        recorded.update(trial.distributions)
    changed = []
    for param, distribution in sorted(recorded.items()):
        choices = param_choices(space, param)
        if choices is not None and tuple(choices) != tuple(distribution.choices):
            changed.append(f"{param} {list(distribution.choices)} -> {choices}")
    for trial in (t for t in trials if t.state == TrialState.WAITING):  # enqueued: no distributions yet
        for param, value in trial.system_attrs.get("fixed_params", {}).items():
            choices = param_choices(space, param)
            if choices is not None and value not in choices:
                changed.append(f"queued trial {trial.number} fixes {param}={value!r}, not one of {choices}")
    if changed:
        raise ConfigError(
            f"study {study.study_name} searched other choices ({'; '.join(changed)}), and a study's choices are "
            f"fixed: start a new study with study.name=<new name> (its warm start measures this one's front first), "
            f"or search the values it has"
        )


def check_reference(study: optuna.Study, storage: str) -> None:
    """Refuse, in one line, to extend a study whose trial 0, the fp32 reference every gain is relative to, was
    interrupted, failed or pruned: it is enqueued only in a new study, so the study could never be summarized."""
    first = study.trials[0] if study.trials else None
    if first is None or first.state in (TrialState.COMPLETE, TrialState.WAITING):
        return
    what = {TrialState.RUNNING: "never finished (interrupted, or running in another process)",
            TrialState.FAIL: "failed", TrialState.PRUNED: "was pruned"}[first.state]
    raise ConfigError(
        f"study {study.study_name}'s fp32 reference (trial 0) {what}; every gain is relative to it and only a new study "
        f"measures it: start a new study with study.name=<new name>, or remove this one "
        f"({console_script('optuna')} delete-study --study-name {study.study_name} --storage {storage})"
    )


def _plain(value: Any) -> Any:
    """The value as Optuna's JSON storage gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))
