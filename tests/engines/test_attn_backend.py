"""The `attn_backend` knob: on the CPU, SDPA restricted to math or flash (or left to pick) decodes the greedy
tokens of eager torch through both torch engines; backends a device cannot run are pruned before any build
with the reason; the KV-head repetition used for kernels without grouped-query attention changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig, TargetConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.torch.attention import attn_backend_problem, hf_logits, repeats_kv, sdpa_backends
from autoopt.engines.torch.engine import TorchEngine
from autoopt.engines.torch_compiled.decoder import StaticDecoder
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, runtime_settings
from autoopt.engines.torch_compiled.fuse import fuse_projections
from autoopt.models.source import ModelTraits
from autoopt.space.validity import candidate_problem, target_problem

RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=2)
REQUESTS = [(1, 12, 8), (2, 20, 6)]  # (batch, prompt_len, new)
CPU = TargetConfig(name="cpu", device="cpu", precisions=["fp32", "bf16", "int8", "int4"],
                   engines=["torch", "torch_compiled"], memory_gb=16, cores=2, price_per_hour=0.1, price_source="x")
H100 = TargetConfig(name="h100", device="cuda", precisions=["fp32", "bf16", "fp16", "int8", "int4", "fp8"],
                    engines=["torch", "torch_compiled"], memory_gb=80, cores=2, price_per_hour=2.0, price_source="x")


def _prompt(i: int, batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(200 + i).integers(1, 500, size=(batch, length), dtype=np.int64)


def _tokens(engine: Engine, ids: np.ndarray, new: int) -> np.ndarray:
    return np.stack(list(engine.generate(ids, new)), axis=1)


@pytest.fixture(scope="module")
def eager(tiny_model: Path) -> Engine:
    return TorchEngine.load(tiny_model, CandidateConfig(engine="torch"), RUNTIME)


def _assert_decodes_like(engine: Engine, reference: Engine) -> None:
    for i, (batch, prompt_len, new) in enumerate(REQUESTS):
        ids = _prompt(i, batch, prompt_len)
        np.testing.assert_array_equal(_tokens(engine, ids, new), _tokens(reference, ids, new), err_msg=f"request {i}")


# ------------------------------------------------------------------------------------ greedy tokens, CPU


@pytest.mark.parametrize("backend", ["auto", "math", "flash"])
@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_torch_engine_decodes_the_eager_tokens_under_each_cpu_backend(
    tiny_model: Path, eager: Engine, backend: str, kv_cache: str
) -> None:
    engine = TorchEngine.load(tiny_model, CandidateConfig(engine="torch", attn_backend=backend, kv_cache=kv_cache),
                              RUNTIME)

    _assert_decodes_like(engine, eager)

    ids = _prompt(9, 2, 24)
    np.testing.assert_allclose(engine.logits(ids), eager.logits(ids), atol=1e-4)
    engine.close()


@pytest.mark.parametrize("backend", ["auto", "math", "flash"])
def test_compiled_engine_loop_decodes_the_eager_tokens_under_each_cpu_backend(
    tiny_model: Path, eager: Engine, backend: str
) -> None:
    candidate = CandidateConfig(engine="torch_compiled", compile_mode="none", attn_backend=backend)
    engine = TorchCompiledEngine.load(tiny_model, candidate, RUNTIME)

    _assert_decodes_like(engine, eager)

    ids = _prompt(9, 2, 24)
    np.testing.assert_allclose(engine.logits(ids), eager.logits(ids), atol=1e-4)
    engine.close()


def test_backend_restriction_is_scoped_to_each_forward(tiny_model: Path) -> None:
    engine = TorchEngine.load(tiny_model, CandidateConfig(engine="torch", attn_backend="math"), RUNTIME)
    flash_before = torch.backends.cuda.flash_sdp_enabled()

    steps = engine.generate(_prompt(0, 1, 8), 4)
    next(steps)  # suspended between two steps: the restriction must not leak out of the engine

    assert torch.backends.cuda.flash_sdp_enabled() == flash_before
    engine.close()


def test_repeated_kv_heads_attend_like_grouped_query_attention(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the fixture is a GQA model
    capacity = 32
    cos, sin = model.model.rotary_emb(torch.zeros(1), torch.arange(capacity)[None])
    ids = torch.from_numpy(_prompt(3, 2, 16))
    math = sdpa_backends("math")

    fuse_projections(model)
    with torch.inference_mode():
        grouped = StaticDecoder(model, 2, capacity, cos[0], sin[0], math, repeat_kv=False)
        repeated = StaticDecoder(model, 2, capacity, cos[0], sin[0], math, repeat_kv=True)
        last = torch.tensor([15])
        (grouped_tokens, grouped_logits), (repeated_tokens, repeated_logits) = (
            grouped(ids, torch.arange(16), last), repeated(ids, torch.arange(16), last))
        assert torch.equal(grouped_tokens, repeated_tokens) and torch.equal(grouped_logits, repeated_logits)
        masked = hf_logits(model, ids, "math", explicit_mask=True)
        plain = hf_logits(model, ids, "math", explicit_mask=False)
    torch.testing.assert_close(masked, plain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ pruning, before builds


@pytest.mark.parametrize("engine", ["torch", "torch_compiled"])
@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_cuda_only_backends_are_pruned_on_cpu_targets_with_the_reason(engine: str, backend: str) -> None:
    candidate = CandidateConfig(engine=engine, attn_backend=backend)

    problem = candidate_problem(candidate, CPU, ModelTraits("Qwen2ForCausalLM"))

    assert problem == (
        f"engine={engine}: attn_backend={backend} has no cpu kernel; on cpu choose one of: auto, math, flash"
    )


def test_the_compiled_engine_refuses_a_cpu_less_backend_in_one_line() -> None:
    with pytest.raises(ConfigError, match="candidate.attn_backend=cudnn has no cpu kernel"):
        runtime_settings(CandidateConfig(engine="torch_compiled", attn_backend="cudnn"), RUNTIME)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        # Flash on cuda: half precision only, and no mask (the compiled step always masks its static cache).
        (CandidateConfig(engine="torch", attn_backend="flash"), "takes fp16/bf16 only"),
        (CandidateConfig(engine="torch", quant="bf16", kv_cache="static", attn_backend="flash"), "no attention mask"),
        (CandidateConfig(engine="torch_compiled", quant="bf16", attn_backend="flash"), "no attention mask"),
        # transformers asks SDPA for grouped-query attention when a dynamic cache needs no mask.
        (CandidateConfig(engine="torch", quant="bf16", attn_backend="efficient"), "use kv_cache=static"),
        # Continuous batching masks its decode steps, and prefills each joining row alone without a mask.
        (CandidateConfig(engine="torch", quant="bf16", attn_backend="flash", serving_batching="continuous"),
         "no attention mask"),
        (CandidateConfig(engine="torch", quant="bf16", attn_backend="efficient", serving_batching="continuous"),
         "no grouped-query attention"),
    ],
)
def test_cuda_backend_rules_prune_what_the_kernels_refuse(candidate: CandidateConfig, reason: str) -> None:
    problem = target_problem(candidate, H100)

    assert problem is not None and reason in problem and "\n" not in problem


@pytest.mark.parametrize(
    "candidate",
    [
        CandidateConfig(engine="torch", quant="bf16", attn_backend="flash"),
        CandidateConfig(engine="torch", quant="fp16", kv_cache="static", attn_backend="efficient"),
        CandidateConfig(engine="torch", attn_backend="math"),
        CandidateConfig(engine="torch", quant="bf16", serving_batching="continuous"),
        CandidateConfig(engine="torch_compiled", quant="int4", attn_backend="efficient"),
        CandidateConfig(engine="torch_compiled", attn_backend="cudnn"),
    ],
)
def test_cuda_targets_accept_the_backends_their_kernels_take(candidate: CandidateConfig) -> None:
    assert target_problem(candidate, H100) is None


def test_only_kernels_without_grouped_query_attention_repeat_kv_heads() -> None:
    assert [b for b in ("auto", "math", "flash", "efficient", "cudnn") if repeats_kv(b)] == ["efficient", "cudnn"]
    assert attn_backend_problem("auto", "tpu", "float32", masked=True) is None
