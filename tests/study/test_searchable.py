"""The sweep's space narrowed to the engines this machine can measure, before the study starts."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from autoopt.config.schema import ModelConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.engines.registry import engine_info
from autoopt.models.source import ModelTraits
from autoopt.space import validity
from autoopt.space.sample import param_choices
from autoopt.space.validity import engine_narrowing
from autoopt.study.runner import searchable
from autoopt.study.summary import SweepError


def _cfg(target: TargetConfig, engines: list[str]) -> SweepConfig:
    space = SpaceConfig(name="s", engine=engines, quant=["none"], threads=[1])
    return SweepConfig(target=target, model=ModelConfig(name="m"), workload=WorkloadConfig(name="w"), space=space,
                       cache_dir="unused", workspace="unused")


def _prep(target: TargetConfig, tied: bool = False, fixed_keys: str | None = None) -> SimpleNamespace:
    traits = ModelTraits("Qwen2ForCausalLM", tied, fixed_keys)
    return SimpleNamespace(target=target, model=SimpleNamespace(tied_embeddings=tied, traits=traits))


def _target(**kw: object) -> TargetConfig:
    return TargetConfig(**{"name": "t", "memory_gb": 8.0, "cores": 2, "price_per_hour": 0.1, "price_source": "test",
                           **kw})


def test_engines_the_target_lacks_leave_the_space_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    target = _target(engines=["torch", "ort"])
    cfg = _cfg(target, ["torch", "ort", "ort_tensorrt"])

    narrowed = searchable(cfg, _prep(target))  # type: ignore[arg-type]

    assert narrowed.space.engine == ["torch", "ort"]
    assert cfg.space.engine == ["torch", "ort", "ort_tensorrt"]  # the caller's config is left as it was
    assert "not searched here: engine=ort_tensorrt is not one of target=t's engines" in caplog.text


def test_under_a_sampling_workload_engines_that_decode_greedily_only_leave_the_space(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every engine of autoopt's samples; one declared greedy-only here stands for an engine that would not
    greedy_only = replace(engine_info("torch_compiled"), samples=False)
    monkeypatch.setattr(validity, "engine_info",
                        lambda name: greedy_only if name == "torch_compiled" else engine_info(name))
    target = _target(engines=["torch", "torch_compiled"])
    cfg = _cfg(target, ["torch", "torch_compiled"])
    greedy = searchable(cfg, _prep(target))  # type: ignore[arg-type]
    cfg.workload.decoding.temperature = 0.7

    narrowed = searchable(cfg, _prep(target))  # type: ignore[arg-type]

    assert greedy.space.engine == ["torch", "torch_compiled"] and narrowed.space.engine == ["torch"]
    assert ("not searched here: engine=torch_compiled decodes greedily only, and workload=w samples "
            "(workload.decoding.temperature=0.7)") in caplog.text


def test_a_space_whose_every_engine_is_unavailable_stops_the_sweep(caplog: pytest.LogCaptureFixture) -> None:
    target = _target(engines=["torch"])

    with pytest.raises(SweepError, match="no engine of space=s can be measured here"):
        searchable(_cfg(target, ["ort_genai"]), _prep(target))  # type: ignore[arg-type]
    assert "not searched here: engine=ort_genai is not one of target=t's engines" in caplog.text  # the reason first


def test_quants_whose_precision_the_target_lacks_leave_the_space_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = _target(engines=["torch", "ort"], precisions=["fp32", "fp16", "int8"])  # a t4-like card: no bf16
    cfg = _cfg(target, ["torch", "ort"])
    cfg.space.quant = ["none", "bf16", "fp16", "int8_dynamic", "fp8"]

    narrowed = searchable(cfg, _prep(target))  # type: ignore[arg-type]

    assert narrowed.space.quant == ["none", "fp16", "int8_dynamic"]
    assert narrowed.space.engine == ["torch", "ort"]
    assert "not searched here: quant=bf16 needs bf16, which target=t does not support" in caplog.text
    assert "quant=fp8 needs fp8" in caplog.text
    no_fp32 = _target(engines=["torch"], precisions=["int8"])  # the reference's own trial reports that one
    assert searchable(_cfg(no_fp32, ["torch"]), _prep(no_fp32)).space.quant == ["none"]  # type: ignore[arg-type]


def test_mixing_prompt_lengths_is_searched_only_where_the_workload_has_several(caplog: pytest.LogCaptureFixture) -> None:
    target = _target(engines=["torch"])
    cfg = _cfg(target, ["torch"])
    cfg.search.objective = "serving"
    cfg.space.serving_mix_lengths = [False, True]
    cfg.workload.prompt_lengths = [128, 128]

    narrowed = searchable(cfg, _prep(target))  # type: ignore[arg-type]

    assert narrowed.space.serving_mix_lengths == [False]
    assert "not searched here: serving_mix_lengths=true changes nothing where every prompt has one length" in caplog.text
    cfg.workload.prompt_lengths = [64, 128]
    assert searchable(cfg, _prep(target)).space.serving_mix_lengths == [False, True]  # type: ignore[arg-type]


def test_the_batchers_knobs_are_searched_only_under_the_serving_objective(caplog: pytest.LogCaptureFixture) -> None:
    """Elsewhere no measurement runs the batcher: each value would be the same candidate measured again."""
    target = _target(engines=["torch"])
    cfg = _cfg(target, ["torch"])
    cfg.space.serving_max_batch = [1, 2, 8]
    cfg.space.serving_policy = ["weighted", "strict"]
    cfg.space.serving_batching = ["continuous"]
    cfg.workload.prompt_lengths = [64, 128]

    narrowed = searchable(cfg, _prep(target)).space  # type: ignore[arg-type]

    assert (narrowed.serving_max_batch, narrowed.serving_policy) == ([1], ["strict"])  # the default, or the first
    assert narrowed.serving_batching == ["continuous"]  # one value: nothing to narrow
    assert ("not searched here: serving_policy=weighted (search.objective=latency times requests without the "
            "batcher and scheduler these knobs set; search.objective=serving measures them)") in caplog.text
    cfg.search.objective = "serving"
    assert searchable(cfg, _prep(target)).space.serving_max_batch == [1, 2, 8]  # type: ignore[arg-type]


def test_on_a_tied_checkpoint_ort_genai_int4_searches_only_the_levers_its_builder_honours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = _target(engines=["torch", "ort_genai"], precisions=["fp32", "int8", "int4"])
    cfg = _cfg(target, ["torch", "ort_genai"])
    cfg.space.quant = ["none", "int4"]
    cfg.space.quant_lm_head = ["same", "fp32", "int8"]
    cfg.space.quant_embeddings = ["fp32", "int4"]

    narrowed = searchable(cfg, _prep(target, tied=True)).space  # type: ignore[arg-type]

    assert (narrowed.quant_lm_head, narrowed.quant_embeddings) == (["same", "fp32"], ["int4"])
    assert "not searched here: quant_lm_head=int8 (engine=ort_genai: with tied embeddings" in caplog.text
    assert searchable(cfg, _prep(target)).space.quant_lm_head == ["same", "fp32", "int8"]  # type: ignore[arg-type]
    cfg.space.quant_lm_head = ["int8"]  # the default space's
    assert searchable(cfg, _prep(target, tied=True)).space.quant_lm_head == ["same"]  # type: ignore[arg-type]
    cfg.space.quant = ["none"]  # no ort_genai int4 candidate: nothing to narrow
    assert searchable(cfg, _prep(target, tied=True)) is cfg  # type: ignore[arg-type]
    cfg.space.quant = ["none", "int4"]  # int4 left out for a target without it: nothing to narrow either
    no_int4 = _target(engines=["torch", "ort_genai"], precisions=["fp32", "int8"])
    assert searchable(cfg, _prep(no_int4, tied=True)).space.quant_lm_head == ["int8"]  # type: ignore[arg-type]


def test_each_engine_is_offered_only_the_quants_it_runs_on_the_targets_device(caplog: pytest.LogCaptureFixture) -> None:
    """ort_genai runs bf16 on cuda only: on a cpu target a proposal of it would be pruned, at the cost of an ask."""
    target = _target(engines=["torch", "ort_genai"], precisions=["fp32", "bf16", "int8", "int4"])
    cfg = _cfg(target, ["torch", "ort_genai"])
    cfg.space.quant = ["none", "bf16", "int4"]

    space = searchable(cfg, _prep(target)).space  # type: ignore[arg-type]

    assert space.by_engine == {"ort_genai": {"quant": ["none", "int4"]}}
    assert param_choices(space, "ort_genai.quant") == ["none", "int4"]
    assert param_choices(space, "torch.quant") == ["none", "bf16"]  # torch has no int4; bf16 it runs on cpu
    assert "not searched here: engine=ort_genai does not run quant=bf16 on cpu; it runs: none, int8_weight, int4" in (
        caplog.text)
    cfg.space.by_engine = {"ort_genai": {"quant": ["bf16", "int4"]}}  # the space's own narrowing is kept
    assert searchable(cfg, _prep(target)).space.by_engine == {"ort_genai": {"quant": ["int4"]}}  # type: ignore[arg-type]


def test_an_engine_the_spaces_own_narrowing_leaves_nothing_to_search_leaves_the_space(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = _target(engines=["torch", "ort_genai"], precisions=["fp32", "bf16", "int4"])
    cfg = _cfg(target, ["torch", "ort_genai"])
    cfg.space.quant = ["none", "bf16", "int4"]
    cfg.space.by_engine = {"ort_genai": {"quant": ["bf16"]}}  # which it runs on cuda only

    space = searchable(cfg, _prep(target)).space  # type: ignore[arg-type]

    assert (space.engine, space.by_engine) == (["torch"], {})
    assert "not searched here: engine=ort_genai, which has no value of quant left to search" in caplog.text
    no_bf16 = _target(engines=["torch", "ort_genai"], precisions=["fp32", "int4"])  # bf16 leaves space.quant first
    assert searchable(cfg, _prep(no_bf16)).space.engine == ["torch"]  # type: ignore[arg-type]


def test_a_knob_the_sweep_settles_for_every_engine_overrides_the_spaces_own_values_for_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under the latency objective the batcher's knobs are settled at one value: an engine's own values of them
    change nothing and must not take the engine (torch: the fp32 reference) out of the space."""
    target = _target(engines=["torch", "ort"])
    cfg = _cfg(target, ["torch", "ort"])
    cfg.space.serving_batching = ["group", "continuous"]
    cfg.space.by_engine = {"torch": {"serving_batching": ["continuous"]}, "ort": {"quant": ["none"]}}

    space = searchable(cfg, _prep(target)).space  # type: ignore[arg-type]

    assert (space.engine, space.serving_batching) == (["torch", "ort"], ["group"])
    assert space.by_engine == {"torch": {}, "ort": {"quant": ["none"]}}


def test_an_engine_the_space_does_not_search_is_asked_nothing() -> None:
    space = SpaceConfig(name="s", engine=["torch"], quant=["none", "bf16"])
    assert param_choices(space, "ort_genai.quant") is None and param_choices(space, "torch.quant") == ["none", "bf16"]


def test_ort_is_offered_continuous_batching_only_where_it_can_batch_continuously(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = _target(engines=["torch", "ort"])
    cfg = _cfg(target, ["torch", "ort"])
    cfg.search.objective = "serving"
    cfg.space.serving_batching = ["group", "continuous"]

    assert searchable(cfg, _prep(target)) is cfg  # type: ignore[arg-type]
    space = searchable(cfg, _prep(target, fixed_keys="partial rotary")).space  # type: ignore[arg-type]
    assert space.by_engine == {"ort": {"serving_batching": ["group"]}}
    assert param_choices(space, "torch.serving_batching") == ["group", "continuous"]
    assert "not searched here: engine=ort: serving_batching=continuous moves cached keys" in caplog.text

    cfg.space.serving_batching = ["continuous"]  # nothing left for ort: the engine leaves the space
    space = searchable(cfg, _prep(target, fixed_keys="partial rotary")).space  # type: ignore[arg-type]
    assert (space.engine, space.by_engine) == (["torch"], {})


def test_off_cpu_ort_is_offered_group_batching_only() -> None:
    """On a card (this machine has none, so the narrowing is asked directly): ort keeps the KV cache there."""
    target = _target(device="cuda", engines=["torch", "ort"], precisions=["fp32", "fp16"])
    space = SpaceConfig(name="s", engine=["torch", "ort"], quant=["none", "fp16", "int8_dynamic"],
                        serving_batching=["group", "continuous"])

    assert engine_narrowing(space, target, _prep(target).model.traits) == {
        "torch": {"quant": (["none", "fp16"], "engine=torch does not run quant=int8_dynamic on cuda; it runs: none, "
                                              "bf16, fp16")},
        "ort": {"quant": (["none", "fp16"], "engine=ort does not run quant=int8_dynamic on cuda; it runs: none, fp16, "
                                            "int4"),
                "serving_batching": (["group"], "engine=ort: serving_batching=continuous runs on cpu only; use "
                                                "serving_batching=group")},
    }
