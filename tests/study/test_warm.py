"""Warm start from earlier studies in a real Optuna storage: their feasible fronts, in this space, once each."""

from __future__ import annotations

import optuna
import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import SpaceConfig
from autoopt.space.sample import sample
from autoopt.study.fingerprint import FINGERPRINT_ATTR
from autoopt.study.warm import front_params, warm_start_params

SPACE = SpaceConfig(name="t", engine=["torch", "ort_genai"], quant=["none", "int8_weight", "int4"],
                    quant_block_size=[32], kv_cache=["dynamic", "static"], threads=[0])


def _earlier(storage: optuna.storages.BaseStorage, name: str, space: SpaceConfig,
             figures: list[tuple[dict[str, object], tuple[float, float, float], float]], model: str = "m") -> None:
    """A finished study of `model` whose trials are `figures`: (parameters, objective values, constraint value)."""
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize"] * 3)
    study.set_user_attr(FINGERPRINT_ATTR, {"model": model})
    for params, values, constraint in figures:
        study.enqueue_trial(params)
        trial = study.ask()
        sample(trial, space)
        trial.set_constraint("top1", constraint)  # autoopt stores its constraints as the TrialRecord does
        study.tell(trial, list(values))


def _genai(quant: str, kv: str) -> dict[str, object]:
    p: dict[str, object] = {"engine": "ort_genai", "ort_genai.quant": quant, "ort_genai.kv_cache": kv,
                            "ort_genai.threads": 0}
    if quant != "none":
        p["ort_genai.quant_block_size"] = 32
    return p


def _short(params: dict[str, object]) -> tuple[object, object]:
    return params["ort_genai.quant"], params["ort_genai.kv_cache"]


def test_front_params_keep_the_non_dominated_lowest_first() -> None:
    a, b, c = {"x": 1}, {"x": 2}, {"x": 3}
    assert front_params([(a, (2.0, 2.0, 0.0)), (b, (1.0, 1.0, 0.01)), (c, (3.0, 3.0, 0.0))]) == [b, a]


def test_the_earlier_fronts_come_in_order_once_each_and_only_what_this_space_has() -> None:
    storage = optuna.storages.InMemoryStorage()
    wide = SpaceConfig(name="w", engine=["torch", "ort_genai"], quant=["none", "int8_weight", "int4"],
                       quant_block_size=[32, 128], kv_cache=["dynamic", "static"], threads=[0])
    b128 = {**_genai("int4", "dynamic"), "ort_genai.quant_block_size": 128}
    _earlier(storage, "t4-study", wide, [
        (_genai("int8_weight", "static"), (10.0, 1.0, 0.005), 0.0),
        (_genai("int4", "static"), (8.0, 0.8, 0.04), 0.0),
        (b128, (5.0, 0.5, 0.06), 0.01),  # infeasible: misses the bar
        (_genai("none", "dynamic"), (30.0, 3.0, 0.0), 0.0),
    ])
    _earlier(storage, "a100-study", wide, [(_genai("int4", "static"), (2.0, 0.5, 0.04), 0.0)])

    sources, warm = warm_start_params(storage, ["t4-study", "a100-study"], SPACE, current="cpu-study", model_key="m")

    assert sources == ["t4-study", "a100-study"]
    assert [_short(p) for p in warm] == [("int4", "static"), ("int8_weight", "static"), ("none", "dynamic")]
    narrow = SpaceConfig(name="n", engine=["torch", "ort_genai"], quant=["none", "int8_weight"],
                         quant_block_size=[32], kv_cache=["static"], threads=[0])
    assert [_short(p) for p in warm_start_params(storage, ["t4-study"], narrow, "cpu-study", "m")[1]] == [
        ("int8_weight", "static")
    ]


def test_unknown_or_own_study_names_are_refused_in_one_line() -> None:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="earlier", storage=storage)
    with pytest.raises(ConfigError, match="lacks; it has: earlier"):
        warm_start_params(storage, ["nope"], SPACE, current="now", model_key="m")
    with pytest.raises(ConfigError, match="names this study"):
        warm_start_params(storage, ["now"], SPACE, current="now", model_key="m")


def test_a_candidate_told_twice_is_warm_started_once() -> None:
    a = {"x": 1}
    assert front_params([(a, (1.0, 1.0, 0.0)), (dict(a), (1.0, 1.0, 0.0))]) == [a]


def test_auto_takes_every_earlier_study_of_the_same_model_and_nothing_else() -> None:
    storage = optuna.storages.InMemoryStorage()
    _earlier(storage, "t4-study", SPACE, [(_genai("int8_weight", "static"), (10.0, 1.0, 0.005), 0.0)])
    _earlier(storage, "other-model", SPACE, [(_genai("int4", "static"), (8.0, 0.8, 0.04), 0.0)], model="other")
    optuna.create_study(study_name="cpu-study", storage=storage).set_user_attr(FINGERPRINT_ATTR, {"model": "m"})

    sources, warm = warm_start_params(storage, ["auto"], SPACE, current="cpu-study", model_key="m")

    assert sources == ["t4-study"]
    assert [_short(p) for p in warm] == [("int8_weight", "static")]
    assert warm_start_params(storage, ["auto"], SPACE, current="cpu-study", model_key="new") == ([], [])
