"""Other model families than Qwen2: each engine either runs them or refuses them before any build with a
one-line reason, never a traceback."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, TargetConfig
from autoopt.engines.registry import engine_class
from autoopt.models.source import ResolvedModel
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.space.validity import candidate_problem

CPU = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test",
                   engines=["torch", "ort", "ort_genai"], precisions=["fp32", "bf16", "int8", "int4"])
SHAPE = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128}
FAMILIES = {
    "gpt_neox": (GPTNeoXConfig(**SHAPE), GPTNeoXForCausalLM),
    "llama": (LlamaConfig(**SHAPE, num_key_value_heads=2), LlamaForCausalLM),
}
# What each engine does with each family: "runs", or the start of its refusal.
EXPECTED = {
    ("gpt_neox", "torch"): "runs",
    ("gpt_neox", "ort"): "runs",
    ("gpt_neox", "ort_genai"): "engine=ort_genai cannot take a GPTNeoXForCausalLM; it takes: ",
    ("llama", "torch"): "runs",
    ("llama", "ort"): "runs",
    ("llama", "ort_genai"): "runs",
}


@pytest.fixture(scope="module")
def folders(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for family, (config, cls) in FAMILIES.items():
        folder = tmp_path_factory.mktemp(family)
        for f in tiny_model.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(f, folder / f.name)
        torch.manual_seed(0)
        cls(config).save_pretrained(folder)
        out[family] = folder
    return out


@pytest.mark.parametrize(("family", "engine"), [k for k, v in EXPECTED.items() if v != "runs"])
def test_an_engine_refuses_a_family_it_cannot_take_before_any_build(folders, family: str, engine: str) -> None:
    traits = ResolvedModel(family, folders[family], family).traits

    problem = candidate_problem(CandidateConfig(engine=engine), CPU, traits)

    assert problem is not None and problem.startswith(EXPECTED[family, engine]) and "\n" not in problem


@pytest.mark.parametrize(("family", "refused"), [("gpt_neox", True), ("llama", False)])
def test_ort_continuous_batching_on_a_model_whose_keys_cannot_be_moved_is_refused_before_any_build(
    folders, family: str, refused: bool
) -> None:
    """GPT-NeoX rotates part of each head only: the stream's key rotation would be wrong."""
    traits = ResolvedModel(family, folders[family], family).traits
    continuous = CandidateConfig(engine="ort", serving_batching="continuous", serving_max_batch=4)

    problem = candidate_problem(continuous, CPU, traits)

    if refused:
        assert problem == ("engine=ort: serving_batching=continuous moves cached keys to other positions, which this "
                           "model's cannot be: moving cached keys is implemented for Qwen2ForCausalLM, "
                           "LlamaForCausalLM, MistralForCausalLM, not GPTNeoXForCausalLM; use serving_batching=group")
    else:
        assert problem is None
    assert candidate_problem(replace(continuous, serving_batching="group"), CPU, traits) is None


@pytest.mark.slow
@pytest.mark.parametrize(("family", "engine"), [k for k, v in EXPECTED.items() if v == "runs"])
def test_an_engine_that_accepts_a_family_builds_and_generates_it(folders, tmp_path: Path, family: str, engine: str):
    folder = folders[family]
    candidate = CandidateConfig(engine=engine)
    assert candidate_problem(candidate, CPU, ResolvedModel(family, folder, family).traits) is None

    built = run_pipeline(folder, family, plan(candidate, "cpu"), tmp_path)
    runtime = RuntimeOptions(device="cpu", threads=1, max_length=32, max_batch=1)
    engine_ = engine_class(engine).load(Path(built.artifact), candidate, runtime)
    tokens = list(engine_.generate(np.array([[5, 6, 7, 8]], dtype=np.int64), 4))
    if engine == "ort":  # continuous batching moves cached keys by RoPE, which GPT-NeoX applies to part of a head
        assert engine_.continuous == (family == "llama")
        if family == "gpt_neox":
            with pytest.raises(NotImplementedError, match="as loaded has no continuous batching: moving cached"):
                engine_.stream()
    engine_.close()

    assert len(tokens) == 4 and all(t.shape == (1,) for t in tokens)
