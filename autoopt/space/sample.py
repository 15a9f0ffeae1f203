"""Turn an Optuna trial into a candidate. Knobs are conditional on the engine (and some on the
quantization): each engine's knobs are separate parameters (`ort.quant`, `torch.kv_cache`, ...), so
every parameter keeps one fixed set of choices, which Optuna's samplers require."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from autoopt.config.knobs import knobs_of, offered
from autoopt.config.schema import CandidateConfig
from autoopt.engines.registry import engine_info

_KNOBS = knobs_of(CandidateConfig)


def _choices(space: Any, engine: str, knob: str) -> list[object]:
    values = list(getattr(space, knob))
    if (only := space.by_engine.get(engine, {}).get(knob)) is not None:
        values = [v for v in values if offered(v, only)]
    if knob == "quant":  # what the engine runs on some device (a sweep narrows it to its target's in `by_engine`)
        known = {q for quants in engine_info(engine).quants.values() for q in quants}
        values = [q for q in values if q in known]
    return values


def param_choices(space: Any, param: str) -> list[object] | None:
    """The choices `sample` offers the trial parameter `param` (`engine`, or `<engine>.<knob>`) over `space`; None
    for a parameter it never asks (an engine the space does not search, a knob that no longer exists)."""
    if param == "engine":
        return list(space.engine)
    engine, _, knob = param.partition(".")
    return _choices(space, engine, knob) if engine in space.engine and knob in _KNOBS else None


def _draw(engine: str, quant: str, pick: Callable[[str], object]) -> dict[str, object]:
    """Every knob of a candidate of `engine` and `quant`: `pick(name)` for each that applies, in declaration order
    (a knob that applies only with some values of another is asked after it), the default for the others."""
    values: dict[str, object] = {k.name: k.default for k in _KNOBS.values()} | {"engine": engine, "quant": quant}
    for k in _KNOBS.values():
        if k.name not in ("engine", "quant") and k.applies(engine, quant, values):
            values[k.name] = pick(k.name)
    return values


def sample(trial: optuna.Trial, space: Any) -> CandidateConfig:
    engine = trial.suggest_categorical("engine", space.engine)
    quant = trial.suggest_categorical(f"{engine}.quant", _choices(space, engine, "quant"))
    values = _draw(engine, quant, lambda name: trial.suggest_categorical(f"{engine}.{name}", _choices(space, engine, name)))
    return CandidateConfig(**values)  # type: ignore[arg-type]


def reference_params(space: Any) -> dict[str, object]:
    """Trial parameters of the fp32 torch reference: default knobs where the space has them."""
    params: dict[str, object] = {"engine": "torch", "torch.quant": "none"}

    def pick(name: str) -> object:
        choices = _choices(space, "torch", name)
        default = _KNOBS[name].default
        params[f"torch.{name}"] = value = default if default in choices else choices[0]
        return value

    _draw("torch", "none", pick)
    return params


def engine_openers(space: Any, enqueued: Sequence[dict[str, object]], seed: int) -> list[dict[str, object]]:
    """Partial trial parameters, `{"engine": e}`, one for each engine of `space` that no `enqueued` parameter set
    (the reference, any warm start) already has, in an order shuffled by `seed`. Enqueued after those, they make
    a new study's first trials visit every engine once, the rest of each candidate sampled as usual (and
    `OpenerRetries` enqueues one again while it is pruned). On two quiet ground truths of space=default, TPE with
    them reached a median 0.75 and 0.67 of the grid's hypervolume after 5 trials, against 0.63 and 0.53 without
    (experiments/2026-11-27-engine-openers.md)."""
    covered = {params["engine"] for params in enqueued}
    engines = [e for e in space.engine if e not in covered]
    random.Random(seed).shuffle(engines)
    return [{"engine": e} for e in engines]


OPENER_RETRIES = 8


class OpenerRetries:
    """The engines whose opener has not yet reached a trial that was not pruned. An opener fixes only the engine,
    so the sampler may complete it into a candidate the target cannot run (flash attention under the compiled
    loop's masked cache on cuda, say); pruned, it would leave its engine unvisited. `after` is asked after each
    trial: after a pruned trial on a pending engine it returns that engine's opener to enqueue again, up to
    `retries` times; once the engine has a trial that was not pruned, nothing more. When no opener is pruned, a
    study runs exactly as without it."""

    def __init__(self, openers: Sequence[dict[str, object]], retries: int = OPENER_RETRIES):
        self._left = {str(params["engine"]): retries for params in openers}

    def after(self, engine: str, pruned: bool) -> dict[str, object] | None:
        left = self._left.get(engine)
        if left is None:
            return None
        if not pruned or left == 0:
            del self._left[engine]
            return None
        self._left[engine] = left - 1
        return {"engine": engine}


class AfterRepeats:
    """The sampler for the next proposal: after `streak` proposals in a row that repeated a candidate the study had
    already measured or seen fail, a random one (seeded by `seed` and the trial number, so a sweep stays
    reproducible); otherwise the study's own. Grouped TPE keeps proposing its best region's measured candidates:
    each repeat is free but costs an ask, and a sweep whose asks ran out stopped short of its n_trials with most of
    the space unmeasured. Random after every single repeat reached every n_trials on synthetic outcomes, but on a
    measured grid it cost TPE 1 point of hypervolume fraction at 20 trials; after two in a row it reached every
    n_trials on the synthetic outcomes and matched TPE left alone on the grid
    (experiments/2026-11-29-repeats-and-asks.md)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, seed: int, streak: int = 2):
        self.sampler, self.seed, self.streak = sampler, seed, streak
        self._repeats = 0  # in a row, up to the last proposal

    def next(self, repeated: bool, number: int) -> optuna.samplers.BaseSampler:
        self._repeats = self._repeats + 1 if repeated else 0
        return optuna.samplers.RandomSampler(seed=self.seed + number) if self._repeats >= self.streak else self.sampler


class _FixedParams:
    """Answers `sample`'s questions from a fixed parameter set. A parameter the set lacks is its knob's default
    where the space offers that: the set was recorded when the knob did not apply to that candidate (an older
    autoopt, or a knob that applies to more engines now), so the candidate ran at the default. `asked` holds every
    answer; `missing` and `outside` the names it could not answer or whose value the space does not offer."""

    def __init__(self, params: dict[str, object]):
        self.params = params
        self.asked: dict[str, object] = {}
        self.missing: list[str] = []
        self.outside: list[str] = []

    def suggest_categorical(self, name: str, choices: list[object]) -> object:
        if name in self.params:
            value = self.params[name]
        else:
            knob = _KNOBS.get(name.partition(".")[2])  # "<engine>.<knob>"
            if knob is None or not offered(knob.default, choices):
                self.missing.append(name)
                return choices[0]
            value = knob.default
        if not offered(value, choices):
            self.outside.append(name)
        self.asked[name] = value
        return value


def _fitted(params: dict[str, object], space: Any) -> tuple[CandidateConfig, dict[str, object]] | None:
    trial = _FixedParams(params)
    candidate = sample(trial, space)  # type: ignore[arg-type]
    return None if trial.missing or trial.outside else (candidate, trial.asked)


def fit(params: dict[str, object], space: Any) -> CandidateConfig | None:
    """The candidate `params` give in `space`, or None where the space asks a parameter they lack (and whose
    default it does not offer) or they hold a value the space does not offer (parameters from another space)."""
    fitted = _fitted(params, space)
    return None if fitted is None else fitted[0]


def fitted_params(params: dict[str, object], space: Any) -> dict[str, object] | None:
    """`params` as `space`'s sampler asks them now (see `_FixedParams`): what to enqueue for that candidate; None
    where it is not one of the space's."""
    fitted = _fitted(params, space)
    return None if fitted is None else fitted[1]
