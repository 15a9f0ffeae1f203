"""Each knob is declared once, on `CandidateConfig`; the space, checks, labels and README derive from it."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.knobs import (
    ENGINES,
    candidate_value_problem,
    check_space,
    inapplicable_knob,
    knobs_of,
    label,
    markdown_table,
    typed_by_engine,
)
from autoopt.config.schema import QUANT_PRECISION, CandidateConfig, SpaceConfig
from autoopt.config.serde import from_dict, to_dict
from autoopt.engines.registry import engine_info
from tests.conftest import REPO
from tests.study.results import result

KNOBS = knobs_of(CandidateConfig)


def test_every_candidate_field_is_a_knob_and_the_space_has_one_list_per_knob() -> None:
    assert [f.name for f in fields(CandidateConfig)] == list(KNOBS)
    assert [f.name for f in fields(SpaceConfig)] == ["name", *KNOBS, "by_engine"]
    assert SpaceConfig().quant_block_size == [KNOBS["quant_block_size"].default]


def test_every_knob_default_is_one_of_its_values_and_names_real_engines() -> None:
    for knob in KNOBS.values():
        assert knob.value_problem(knob.default) is None, knob.name
        assert set(knob.engines) <= set(ENGINES) and knob.meaning
    assert set(QUANT_PRECISION) == set(KNOBS["quant"].choices)


def test_engine_knob_choices_are_the_registered_engines() -> None:
    assert [engine_info(name).name for name in ENGINES] == list(ENGINES)


def test_readme_knob_table_is_the_one_derived_from_the_declarations() -> None:
    assert markdown_table(CandidateConfig) in (REPO / "README.md").read_text()


def test_value_checks_name_the_knob_the_value_and_the_choices() -> None:
    assert candidate_value_problem(CandidateConfig(graph_opt="max")) == (
        "candidate.graph_opt=max is not valid; choose one of: disable, basic, extended, all"
    )
    assert candidate_value_problem(CandidateConfig(threads=-1)) == (
        "candidate.threads=-1 must be an integer >= 0 (0 = default)"
    )


def test_space_check_names_the_bad_entry() -> None:
    with pytest.raises(ConfigError, match="space.kv_cache has paged; choose from: dynamic, static"):
        check_space(SpaceConfig(name="s", kv_cache=["paged"]), CandidateConfig)
    with pytest.raises(ConfigError, match="fp32 reference is trial 0"):
        check_space(SpaceConfig(name="s", engine=["ort"]), CandidateConfig)


@pytest.mark.parametrize(("by_engine", "error"), [
    ({"ort_genai": {"quant": ["int4"]}}, "space.by_engine.ort_genai narrows an engine space.engine does not search"),
    ({"ort": {"colour": [1]}}, "space.by_engine.ort has colour, which is not a knob"),
    ({"ort": {"engine": ["ort"]}}, "space.by_engine.ort has engine, which is not a knob"),
    ({"torch": {"quant_block_size": [32]}}, "knob quant_block_size does not apply to engine=torch; it is used by"),
    ({"ort": {"quant": ["int8_static"]}}, r"space.by_engine.ort.quant has int8_static; give values of space.quant "
                                          r"\(none, int4\)"),
    ({"ort": {"fuse": [1]}}, "space.by_engine.ort.fuse has 1; give values of space.fuse"),  # YAML 1 is not true
    ({"ort": {"quant": []}}, "space.by_engine.ort.quant has no value"),
    ({"torch": {"quant": ["int4"]}}, "space.by_engine.torch.quant must include none"),
])
def test_space_check_names_a_bad_by_engine_entry(by_engine: dict, error: str) -> None:
    space = SpaceConfig(name="s", engine=["torch", "ort"], quant=["none", "int4"], fuse=[False, True],
                        by_engine=by_engine)
    with pytest.raises(ConfigError, match=error):
        check_space(space, CandidateConfig)


def test_by_engine_in_yaml_reaches_the_space_typed() -> None:
    from autoopt.config.load import to_typed

    space = to_typed({"name": "s", "engine": ["torch", "ort"], "quant": ["none", "int4"],
                      "by_engine": {"ort": {"quant": ["int4"]}}}, SpaceConfig)
    check_space(space, CandidateConfig)
    assert space.by_engine == {"ort": {"quant": ["int4"]}}
    with pytest.raises(ConfigError, match=r"incompatible with type hint .* \(at by_engine.ort\)"):
        to_typed({"name": "s", "by_engine": {"ort": ["int4"]}}, SpaceConfig)


def test_a_whole_number_for_a_float_knob_in_by_engine_is_that_float_and_a_bool_knob_takes_no_number() -> None:
    space = SpaceConfig(name="s", engine=["torch", "ort"], fuse=[False, True], serving_queue_delay_ms=[5.0, 10.0],
                        by_engine={"ort": {"serving_queue_delay_ms": [5], "fuse": [1]}})

    space.by_engine = typed_by_engine(space, CandidateConfig)

    assert space.by_engine == {"ort": {"serving_queue_delay_ms": [5.0], "fuse": [1]}}
    assert type(space.by_engine["ort"]["serving_queue_delay_ms"][0]) is float
    with pytest.raises(ConfigError, match="space.by_engine.ort.fuse has 1; give values of space.fuse"):
        check_space(space, CandidateConfig)


def test_label_shows_only_the_knobs_that_apply() -> None:
    assert label(CandidateConfig()) == "torch none kv=dynamic t=all b=wl warm=one"
    assert label(CandidateConfig(engine="ort", quant="int4", fuse=True)) == "ort int4 fused b32 L4 opt=all t=all b=wl warm=one"


def test_an_engine_can_take_a_knob_for_fewer_quants_than_the_others() -> None:
    block = KNOBS["quant_block_size"]  # torch_compiled's int8_weight is per channel: no block to size
    others = vars(CandidateConfig())

    assert block.applies("ort", "int8_weight", others) and block.applies("torch_compiled", "int4", others)
    assert not block.applies("torch_compiled", "int8_weight", others)
    assert inapplicable_knob(CandidateConfig(engine="torch_compiled", quant="int8_weight", quant_block_size=128)) == (
        "candidate.quant_block_size does not apply to quant=int8_weight; it is used by engines ort, ort_genai with "
        "quant int4, int8_weight; engines torch_compiled with quant int4"
    )
    assert "b128" in label(CandidateConfig(engine="torch_compiled", quant="int4", quant_block_size=128))
    assert "b32" not in label(CandidateConfig(engine="torch_compiled", quant="int8_weight"))


def test_a_measurement_survives_its_json_round_trip() -> None:
    original = result(50.0, 0.5, 0.99, CandidateConfig(engine="ort_genai", quant="int4"))

    assert from_dict(type(original), to_dict(original)) == original


def test_the_prefill_chunk_applies_to_continuous_batching_only() -> None:
    chunked = CandidateConfig(serving_batching="continuous", serving_prefill_chunk=32)
    assert inapplicable_knob(chunked) is None and "chunk=32" in label(chunked)
    assert inapplicable_knob(replace(chunked, serving_batching="group")) == (
        "candidate.serving_prefill_chunk changes nothing with serving_batching=group; leave it at its default (0), "
        "it applies with serving_batching continuous")


@pytest.mark.parametrize(("knob", "value"), [("serving_queue_delay_ms", 5.0), ("serving_mix_lengths", True)])
def test_a_group_batching_knob_applies_only_where_a_group_can_wait_or_pad(knob: str, value: object) -> None:
    grouped = CandidateConfig(serving_max_batch=4, **{knob: value})
    assert inapplicable_knob(grouped) is None
    for other in ({"serving_batching": "continuous"}, {"serving_max_batch": 1}):
        assert not KNOBS[knob].applies("torch", "none", vars(CandidateConfig(**other)))
        name, setting = next(iter(other.items()))
        assert inapplicable_knob(CandidateConfig(**other, **{knob: value})) == (
            f"candidate.{knob} changes nothing with {name}={setting}; leave it at its default "
            f"({str(KNOBS[knob].default).lower()}), it applies with serving_batching group and serving_max_batch "
            "2/4/8/16"
        )
    assert "qd=5ms" in label(CandidateConfig(serving_queue_delay_ms=5.0))
    assert "qd=" not in label(CandidateConfig(serving_queue_delay_ms=5.0, serving_max_batch=1))
