from __future__ import annotations

from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from autoopt.config.errors import ConfigError
from autoopt.config.serving import ServingClassConfig, ServingConfig, check_serving


def test_defaults_are_valid_and_work_as_an_omegaconf_structured_config() -> None:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ServingConfig), {"max_batch": 8}))
    assert isinstance(cfg, ServingConfig) and cfg.max_batch == 8
    assert [(c.name, c.slo_ms) for c in cfg.classes] == [("P0", 200.0), ("P1", 500.0), ("P2", 1000.0), ("P3", 0.0)]
    assert sum(c.share for c in cfg.classes) == pytest.approx(1.0)
    check_serving(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arrival": "uniform"}, "serving.arrival='uniform' is not known; choose one of: poisson, gamma"),
        ({"policy": "fifo"}, "serving.policy='fifo'"),
        ({"max_batch": 0}, "serving.max_batch=0 must be positive"),
        ({"prefill_chunk": -1, "batching": "continuous"}, "serving.prefill_chunk=-1 must be zero or positive"),
        ({"prefill_chunk": 16}, "serving.prefill_chunk=16 changes nothing with batching=group"),
        ({"rate_rps": -1.0}, "serving.rate_rps=-1.0 must be positive"),
        ({"min_attainment": 1.5}, "serving.min_attainment=1.5"),
        ({"classes": []}, "serving.classes is empty"),
        ({"classes": [ServingClassConfig("A", 0), ServingClassConfig("B", 0)]}, "priority repeats 0"),
        ({"classes": [ServingClassConfig("A", 0, on_full="drop")]}, "serving.classes[0].on_full='drop'"),
        ({"classes": [ServingClassConfig("A", 0, queue_limit=0)]}, "serving.classes[0].queue_limit=0"),
        ({"classes": [ServingClassConfig("gold.tier", 0)]}, "serving.classes[0].name=gold.tier has a '.' or '|'"),
        ({"classes": [ServingClassConfig("a|b", 0)]}, "serving.classes[0].name=a|b has a '.' or '|'"),
        ({"classes": [ServingClassConfig("A", 0, itl_slo_ms=-5.0)]}, "serving.classes[0].itl_slo_ms=-5.0 must be zero"),
        ({"classes": [ServingClassConfig("A", 0, 200.0, ttft_slo_ms=300.0)]},
         "serving.classes[0].ttft_slo_ms=300.0 is longer than its slo_ms=200.0"),
        ({"classes": [ServingClassConfig("A", 0, 200.0, itl_slo_ms=250.0)]},
         "serving.classes[0].itl_slo_ms=250.0 is longer than its slo_ms=200.0"),
    ],
)
def test_check_names_the_key_the_value_and_the_fix(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_serving(replace(ServingConfig(), **change))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_fingerprints_leave_out_the_serving_settings_that_are_candidate_knobs() -> None:
    from dataclasses import asdict

    from autoopt.config.schema import WorkloadConfig
    from autoopt.config.serving import SERVING_KNOBS, without_serving_knobs

    workload = asdict(WorkloadConfig())
    kept = without_serving_knobs(workload)
    assert not set(SERVING_KNOBS) & set(kept["serving"])
    assert kept["serving"]["rate_rps"] == workload["serving"]["rate_rps"] and kept["prompt_lengths"]
    assert without_serving_knobs({"serving": None}) == {"serving": None}


def test_fingerprints_record_a_classs_streaming_deadlines_only_where_set() -> None:
    from dataclasses import asdict

    from autoopt.config.schema import WorkloadConfig
    from autoopt.config.serving import STREAMING_SLOS, without_serving_knobs

    workload = WorkloadConfig()
    recorded = without_serving_knobs(asdict(workload))["serving"]["classes"]
    assert [set(c) & set(STREAMING_SLOS) for c in recorded] == [set()] * 4  # as studies recorded before they existed
    assert "min_judged" not in without_serving_knobs(asdict(workload))["serving"]  # likewise at its old behaviour (0)
    workload.serving.min_judged = 30
    assert without_serving_knobs(asdict(workload))["serving"]["min_judged"] == 30
    workload.serving.min_judged = 0
    assert recorded[0] == {k: v for k, v in asdict(workload.serving.classes[0]).items() if k not in STREAMING_SLOS}
    workload.serving.classes[1].itl_slo_ms = 50.0
    recorded = without_serving_knobs(asdict(workload))["serving"]["classes"]
    assert recorded[1]["itl_slo_ms"] == 50.0 and "ttft_slo_ms" not in recorded[1]


def test_fingerprints_record_a_workloads_decoding_only_where_it_samples() -> None:
    from dataclasses import asdict

    from autoopt.config.schema import DecodingConfig, WorkloadConfig, workload_record
    from autoopt.config.serving import without_serving_knobs

    greedy = WorkloadConfig(name="w", decoding=DecodingConfig(seed=5))  # a seed draws nothing where none samples
    recorded = workload_record(greedy)
    assert "decoding" not in recorded  # the record studies and ground truths made before the field existed
    assert recorded == {k: v for k, v in without_serving_knobs(asdict(greedy)).items() if k != "decoding"}
    sampling = WorkloadConfig(name="w", decoding=DecodingConfig(temperature=0.8))
    assert workload_record(sampling)["decoding"]["temperature"] == 0.8
    assert workload_record(sampling)["accuracy"] == "sampled_agreement"  # what its bar reads
