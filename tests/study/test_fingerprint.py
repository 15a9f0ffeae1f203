"""A study extends only under the fingerprint its figures were measured under."""

from __future__ import annotations

import optuna
import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import SpaceConfig
from autoopt.space.sample import sample
from autoopt.study.fingerprint import check_fingerprint, check_space, fingerprint_digest

FINGERPRINT = {
    "objectives": {"objective": "latency", "latency": "e2e_p90", "min_top1_agreement": 0.95},
    "target": {"name": "cpu", "price_per_hour": 0.0892, "cores": 2},
    "workload": {"prompt_lengths": [64, 128]},
    "bench": {"min_runs": 6},
    "model": "builtin-abc",
    "reference_sha256": "ref",
    "libraries": {"torch": "2.13.0"},
    "code": "0123456789abcdef",
    "machine": "AMD EPYC",
}


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s", directions=["minimize"] * 3)


def test_the_derived_names_digest_changes_with_the_fingerprint_or_the_space_only() -> None:
    space = SpaceConfig()
    name = fingerprint_digest(FINGERPRINT, space)
    assert name == fingerprint_digest(dict(FINGERPRINT), SpaceConfig()) and len(name) == 8
    assert fingerprint_digest({**FINGERPRINT, "code": "fedcba9876543210"}, space) != name
    assert fingerprint_digest(FINGERPRINT, SpaceConfig(quant=["none", "int4"])) != name


def test_a_derived_study_name_ends_in_the_digest_and_a_given_name_is_kept() -> None:
    from types import SimpleNamespace

    from autoopt.config.schema import BenchConfig, SearchConfig, TargetConfig, WorkloadConfig
    from autoopt.study.runner import study_name

    target = TargetConfig(name="cpu", memory_gb=4.0, price_per_hour=0.1, price_source="test")
    prep = SimpleNamespace(target=target, workload=WorkloadConfig(), bench=BenchConfig(), reference_sha256="r",
                           model=SimpleNamespace(name="builtin", key="builtin-0123456789abcdef"))

    def cfg(space: SpaceConfig, name: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(study=SimpleNamespace(name=name), search=SearchConfig(), target=target,
                               workload=SimpleNamespace(name="chat"), space=space)

    default = study_name(cfg(SpaceConfig(name="default")), prep)  # type: ignore[arg-type]
    assert default.startswith("builtin-456789abcdef-cpu-chat-default-") and len(default.rsplit("-", 1)[1]) == 8
    assert study_name(cfg(SpaceConfig(name="default")), prep) == default  # type: ignore[arg-type]
    other = cfg(SpaceConfig(name="default", quant=["none", "int4"]))
    assert study_name(other, prep) != default  # type: ignore[arg-type]
    assert study_name(cfg(SpaceConfig(name="default"), "mine"), prep) == "mine"  # type: ignore[arg-type]


def test_a_new_study_records_its_fingerprint_and_the_same_one_extends_it() -> None:
    study = _study()

    check_fingerprint(study, FINGERPRINT)
    check_fingerprint(study, FINGERPRINT)

    assert study.user_attrs["fingerprint"] == FINGERPRINT


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("objectives", {"objective": "latency", "latency": "e2e_p90", "min_top1_agreement": 0.99}),
        ("objectives", {"objective": "latency", "latency": "ttft_p50", "min_top1_agreement": 0.95}),
        ("target", {"name": "cpu", "price_per_hour": 0.5, "cores": 2}),
        ("workload", {"prompt_lengths": [256]}),
        ("bench", {"min_runs": 20}),
        ("libraries", {"torch": "2.14.0"}),
        ("code", "fedcba9876543210"),  # autoopt's own sources: a fixed pass or engine measures anew
    ],
)
def test_a_changed_bar_objective_price_workload_or_bench_is_refused_naming_what_changed(key, change) -> None:
    study = _study()
    check_fingerprint(study, FINGERPRINT)

    with pytest.raises(ConfigError) as refused:
        check_fingerprint(study, {**FINGERPRINT, key: change})

    assert f"measured under other {key}" in str(refused.value) and "study.name=" in str(refused.value)


def test_a_study_extends_only_over_the_choices_its_trials_had() -> None:
    study = _study()
    space = SpaceConfig(name="s", engine=["torch", "ort_genai"], quant=["none", "int4"])
    study.enqueue_trial({"engine": "torch"})
    trial = study.ask()
    sample(trial, space)
    study.tell(trial, [1.0, 1.0, 0.0])

    check_space(study, space)
    check_space(study, SpaceConfig(name="s", engine=["torch", "ort_genai"], quant=["none", "int4", "fp8"]))  # neither runs fp8
    with pytest.raises(ConfigError) as refused:
        check_space(study, SpaceConfig(name="s", engine=["torch", "ort_genai"], quant=["none", "int8_dynamic", "int4"]))

    message = str(refused.value)
    assert "searched other choices (torch.quant ['none'] -> ['none', 'int8_dynamic'])" in message
    assert "study.name=" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"engine \['torch', 'ort_genai'\] -> \['torch'\]"):
        check_space(study, SpaceConfig(name="s", engine=["torch"], quant=["none", "int4"]))


def test_parameters_of_engines_or_knobs_that_no_longer_exist_are_not_compared() -> None:
    study = _study()
    space = SpaceConfig(name="s", engine=["torch"], quant=["none"])
    distribution = optuna.distributions.CategoricalDistribution(["a", "b"])
    for param in ("retired_engine.quant", "torch.retired_knob"):
        study.add_trial(optuna.trial.create_trial(params={param: "a"}, distributions={param: distribution},
                                                  values=[1.0, 1.0, 0.0]))

    check_space(study, space)


def test_a_queued_trial_fixing_a_value_the_space_no_longer_offers_is_refused_too() -> None:
    study = _study()
    study.enqueue_trial({"engine": "ort_genai", "ort_genai.quant": "int4"})

    check_space(study, SpaceConfig(name="s", engine=["torch", "ort_genai"], quant=["none", "int4"]))
    with pytest.raises(ConfigError, match=r"queued trial 0 fixes ort_genai.quant='int4', not one of \['none'\]"):
        check_space(study, SpaceConfig(name="s", engine=["torch", "ort_genai"], quant=["none", "int8_dynamic"]))
