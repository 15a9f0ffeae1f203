"""The samplers the benchmark compares, by name: each a function of the seed. `tpe` (multivariate,
grouped), `nsga2` and `random` are built exactly as the sweep builds them
(`autoopt.study.runner.make_sampler`)."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoopt.config.schema import SearchConfig


def _sweep_sampler(name: str) -> Callable[[int], optuna.samplers.BaseSampler]:
    def build(seed: int) -> optuna.samplers.BaseSampler:
        from autoopt.study.runner import make_sampler  # imports MLflow: only when a replay needs it

        return make_sampler(SearchConfig(sampler=name, seed=seed))

    return build


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "random": _sweep_sampler("random"),
    "tpe": _sweep_sampler("tpe"),
    "nsga2": _sweep_sampler("nsga2"),
    # TPE with each parameter modelled on its own (the sweep's default until this benchmark chose grouped TPE)
    "tpe_independent": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=6),
    # independent TPE after only 3 random trials: the model steers sooner
    "tpe_s3": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
}
