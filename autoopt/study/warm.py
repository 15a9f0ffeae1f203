"""Warm start: measure the fronts of earlier studies first.

A study on a new target, workload or library version rarely starts from nothing: the candidates that were
on an earlier study's feasible front are the likeliest to be on this one's. They are enqueued right after
the fp32 reference, measured anew (never copied: their figures belong to the other study's conditions),
and the sampler goes on from what they showed. Candidates the current space cannot produce are skipped.
`search.warm_start=[auto]` (the default) takes every earlier study of the same model in the storage; on the
search benchmark, warm starts from another target's study reached 95 % of the grid's hypervolume in 7-8
trials where cold TPE needed a median of 14.5-25 (experiments/2026-11-27-warm-start-and-fastest-pick.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import optuna

from autoopt import pareto
from autoopt.config.errors import ConfigError
from autoopt.space.sample import fitted_params
from autoopt.study.fingerprint import FINGERPRINT_ATTR
from autoopt.study.trial import feasible


def front_params(measured: Iterable[tuple[dict[str, Any], Sequence[float]]]) -> list[dict[str, Any]]:
    """The parameters of the Pareto front of feasible (parameters, objective values) pairs, lowest first
    objective first, each parameter set once (a study tells a reused candidate's values again)."""
    items = list(measured)
    points = [pareto.Point(str(i), tuple(values)) for i, (_, values) in enumerate(items)]
    out: list[dict[str, Any]] = []
    for p in sorted(pareto.front(points), key=lambda p: p.objectives):
        if items[int(p.key)][0] not in out:
            out.append(items[int(p.key)][0])
    return out


AUTO = "auto"  # every earlier study of the same model in the storage


def earlier_studies(storage: str | optuna.storages.BaseStorage, current: str, model_key: str) -> list[str]:
    """The other studies in `storage` whose recorded fingerprint names the model `model_key`, in the storage's
    order (creation order)."""
    return [s.study_name for s in optuna.get_all_study_summaries(storage)
            if s.study_name != current and s.user_attrs.get(FINGERPRINT_ATTR, {}).get("model") == model_key]


def check_named(names: Sequence[str], available: set[str], current: str | None = None) -> None:
    """Refuse, in one line, a study in `names` (but `auto`) that is `current` or that `available` lacks."""
    for name in names:
        if name == AUTO:
            continue
        if name == current:
            raise ConfigError(f"search.warm_start names this study ({name}); name earlier studies")
        if name not in available:
            raise ConfigError(
                f"search.warm_start names study {name!r}, which the storage lacks; it has: "
                f"{', '.join(sorted(available - {current or ''})) or 'no other study'}"
            )


def warm_start_params(storage: str | optuna.storages.BaseStorage, names: Sequence[str], space: Any,
                      current: str, model_key: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The studies `names` stand for (`auto`: every earlier study of the model) and the front candidates
    of theirs that `space` can produce, in order, once each."""
    if AUTO in names:
        names = [*earlier_studies(storage, current, model_key), *(n for n in names if n != AUTO)]
    check_named(names, set(optuna.get_all_study_names(storage)), current)
    out: list[dict[str, Any]] = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for params in front_params((t.params, t.values) for t in done if feasible(t)):
            fitted = fitted_params(params, space)
            if fitted is not None and fitted not in out:  # once, though several studies have it
                out.append(fitted)
    return list(dict.fromkeys(names)), out
