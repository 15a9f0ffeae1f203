from __future__ import annotations

import pytest

from autoopt.config.knobs import candidate_value_problem, inapplicable_knob
from autoopt.config.schema import CandidateConfig, TargetConfig
from autoopt.space.validity import target_problem

CPU = TargetConfig(name="cpu", device="cpu", precisions=["fp32", "bf16", "int8", "int4"],
                   engines=["torch", "ort", "ort_genai"], memory_gb=16, cores=2, price_per_hour=0.1, price_source="x")
T4 = TargetConfig(name="t4", device="cuda", precisions=["fp32", "fp16", "int8", "int4"],
                  engines=["torch", "ort", "ort_genai", "ort_tensorrt"], memory_gb=16, cores=4, price_per_hour=0.5,
                  price_source="x")


@pytest.mark.parametrize(
    ("candidate", "target", "reason"),
    [
        (CandidateConfig(engine="torch", quant="bf16"), T4, "quant=bf16 needs bf16, which target=t4 does not support "
         '(supports: fp32, fp16, int8, int4; where this machine runs bf16, declare it: '
         '"target.precisions=[fp32,fp16,int8,int4,bf16]")'),
        (CandidateConfig(engine="ort_tensorrt"), CPU, "engine=ort_tensorrt is not available on target=cpu"),
        (CandidateConfig(engine="torch", quant="int4"), CPU, "engine=torch does not run quant=int4 on cpu"),
        (CandidateConfig(engine="torch", quant="int8_dynamic"), T4, "engine=torch does not run quant=int8_dynamic on cuda"),
        (CandidateConfig(engine="ort", kv_cache="static"), CPU, "candidate.kv_cache does not apply to engine=ort; it is used by engines torch, ort_genai"),
        (CandidateConfig(engine="torch", fuse=True), CPU, "candidate.fuse does not apply to engine=torch"),
        (CandidateConfig(engine="ort", threads=3), CPU, "threads=3 exceeds the 2 cores of target=cpu"),
        (CandidateConfig(engine="ort", quant="fp16", fuse=True), T4, "fuse=true needs the fp32 graph on cuda"),
        (CandidateConfig(engine="ort_genai", serving_batching="continuous"), CPU,
         "candidate.serving_batching does not apply to engine=ort_genai"),
        (CandidateConfig(engine="ort", serving_batching="continuous"), T4,
         "serving_batching=continuous runs on cpu only"),
        (CandidateConfig(engine="torch", kv_cache="static", serving_batching="continuous"), CPU,
         "serving_batching=continuous needs kv_cache=dynamic"),
        (CandidateConfig(engine="torch", serving_batching="continuous", serving_mix_lengths=True), CPU,
         "candidate.serving_mix_lengths changes nothing with serving_batching=continuous; leave it at its default "
         "(false), it applies with serving_batching group and serving_max_batch 2/4/8/16"),
        (CandidateConfig(serving_max_batch=1, serving_queue_delay_ms=5.0), CPU,
         "candidate.serving_queue_delay_ms changes nothing with serving_max_batch=1"),
    ],
)
def test_target_rejects_what_it_cannot_run_with_the_reason(candidate, target, reason) -> None:
    assert candidate_value_problem(candidate) is None

    problem = inapplicable_knob(candidate) or target_problem(candidate, target)

    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "candidate",
    [
        CandidateConfig(),
        CandidateConfig(engine="torch", quant="int8_dynamic", kv_cache="static"),
        CandidateConfig(engine="torch", quant="int8_dynamic", serving_batching="continuous"),
        CandidateConfig(engine="ort", quant="int4", serving_batching="continuous"),
        CandidateConfig(engine="ort", quant="int4", fuse=True, graph_opt="basic", quant_block_size=128),
        CandidateConfig(engine="ort_genai", quant="int4", kv_cache="static", threads=1),
    ],
)
def test_cpu_target_accepts_what_its_engines_run(candidate) -> None:
    assert candidate_value_problem(candidate) is None
    assert inapplicable_knob(candidate) is None
    assert target_problem(candidate, CPU) is None


def test_t4_accepts_fp16_but_not_bf16() -> None:
    assert target_problem(CandidateConfig(engine="torch", quant="fp16"), T4) is None
    assert target_problem(CandidateConfig(engine="torch", quant="bf16"), T4) is not None


def test_weight_only_knobs_do_not_apply_to_other_quantizations() -> None:
    problem = inapplicable_knob(CandidateConfig(engine="ort", quant="int8_dynamic", quant_block_size=128))

    assert problem == (
        "candidate.quant_block_size does not apply to quant=int8_dynamic; "
        "it is used by engines ort, ort_genai with quant int4, int8_weight; engines torch_compiled with quant int4"
    )


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without a CUDA device")
def test_unavailable_engines_names_why_each_cannot_be_measured_here() -> None:
    from autoopt.space.validity import unavailable_engines

    assert unavailable_engines(["torch", "ort"], CPU) == {}
    assert unavailable_engines(["ort_tensorrt"], CPU) == {
        "ort_tensorrt": "engine=ort_tensorrt is not one of target=cpu's engines (torch, ort, ort_genai)"
    }
    on_t4 = unavailable_engines(["torch", "ort"], T4)
    assert set(on_t4) == {"torch", "ort"} and all("needs a CUDA device" in r for r in on_t4.values())
