from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest
import torch
import transformers

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.ort_genai.engine import GenaiEngine
from autoopt.models import tiny_random_model
from autoopt.passes.genai_build import check_matmulnbits, run_genai_build
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan

CPU = RuntimeOptions(device="cpu", threads=2, max_length=64, max_batch=4)
PROMPT_LEN, NEW_TOKENS = 12, 10


def _build(model: Path, cache: Path, candidate: CandidateConfig) -> Path:
    return run_pipeline(model, "tiny", plan(candidate, "cpu"), cache).artifact


def _tokens(engine: GenaiEngine, ids: np.ndarray) -> np.ndarray:
    return np.stack(list(engine.generate(ids, NEW_TOKENS)), axis=1)


def _hf_greedy(hf: transformers.PreTrainedModel, ids: np.ndarray) -> np.ndarray:
    # An explicit mask: left to itself, generate() treats a row's trailing pad ids as padding.
    prompt = torch.from_numpy(ids)
    out = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        eos_token_id=None,
    )
    return out[:, PROMPT_LEN:].numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def fp32(tiny: Path, cache: Path) -> Path:
    return _build(tiny, cache, CandidateConfig(engine="ort_genai"))


@pytest.fixture(scope="module")
def int4(tiny: Path, cache: Path) -> Path:
    return _build(tiny, cache, CandidateConfig(engine="ort_genai", quant="int4", quant_block_size=16))


@pytest.fixture(scope="module")
def hf(tiny: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()


@pytest.fixture
def ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 512, size=(2, PROMPT_LEN), dtype=np.int64)


def test_plan_configures_matmulnbits_only_for_weight_quantization():
    (fp32_step,) = plan(CandidateConfig(engine="ort_genai"), "cpu")
    (int4_step,) = plan(CandidateConfig(engine="ort_genai", quant="int4", quant_block_size=64), "cuda")

    assert fp32_step.settings == {"precision": "fp32", "execution_provider": "cpu"}
    assert int4_step.settings == {
        "precision": "int4",
        "execution_provider": "cuda",
        "block_size": 64,
        "accuracy_level": 4,
    }


def test_fp32_logits_match_torch(fp32: Path, hf: transformers.PreTrainedModel, ids: np.ndarray):
    engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai"), CPU)

    logits = engine.logits(ids)
    engine.close()

    with torch.no_grad():
        reference = hf(torch.from_numpy(ids)).logits.numpy()
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    assert np.abs(logits - reference).max() < 1e-4


def test_greedy_tokens_match_hf_generate(fp32: Path, hf: transformers.PreTrainedModel, ids: np.ndarray):
    engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai"), CPU)

    steps = list(engine.generate(ids, NEW_TOKENS))
    engine.close()

    with torch.no_grad():
        reference = _hf_greedy(hf, ids)
    assert all(s.dtype == np.int64 and s.shape == (2,) for s in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), reference)


def test_kv_cache_layouts_and_thread_counts_give_identical_tokens(fp32: Path, ids: np.ndarray):
    outputs = {}
    for kv_cache in ("dynamic", "static"):
        for threads in (1, 2):
            runtime = RuntimeOptions(device="cpu", threads=threads, max_length=64, max_batch=2)
            engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai", kv_cache=kv_cache), runtime)
            outputs[kv_cache, threads] = _tokens(engine, ids)
            engine.close()

    first = outputs["dynamic", 1]
    for tokens in outputs.values():
        np.testing.assert_array_equal(tokens, first)


def _with_eos_and_pad(artifact: Path, token: int, folder: Path) -> Path:
    copy = shutil.copytree(artifact, folder)
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"].update(eos_token_id=token, pad_token_id=token)
    (copy / "genai_config.json").write_text(json.dumps(config))
    return copy


def test_generation_never_stops_at_the_artifacts_eos(fp32: Path, ids: np.ndarray, tmp_path: Path):
    engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai"), CPU)
    expected = _tokens(engine, ids)
    engine.close()
    with_eos = _with_eos_and_pad(fp32, int(expected[0, 2]), tmp_path / "artifact")  # emitted early on

    engine = GenaiEngine.load(with_eos, CandidateConfig(engine="ort_genai"), CPU)
    tokens = _tokens(engine, ids)
    engine.close()

    np.testing.assert_array_equal(tokens, expected)


def test_prompts_ending_in_the_pad_id_match_torch(
    fp32: Path, hf: transformers.PreTrainedModel, ids: np.ndarray, tmp_path: Path
):
    pad = int(ids[0, -1])  # the Generator would take a row's trailing pad ids for padding
    engine = GenaiEngine.load(
        _with_eos_and_pad(fp32, pad, tmp_path / "artifact"), CandidateConfig(engine="ort_genai"), CPU
    )

    logits = engine.logits(ids)
    tokens = _tokens(engine, ids)
    engine.close()

    with torch.no_grad():
        reference = hf(torch.from_numpy(ids)).logits.numpy()
        reference_tokens = _hf_greedy(hf, ids)
    assert np.abs(logits - reference).max() < 1e-4
    np.testing.assert_array_equal(tokens, reference_tokens)


def test_graph_optimization_levels_give_the_same_logits(fp32: Path, ids: np.ndarray):
    logits = []
    for level in ("disable", "all"):
        engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai", graph_opt=level), CPU)
        logits.append(engine.logits(ids))
        engine.close()

    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_int4_graph_has_requested_block_size_and_changes_logits(fp32: Path, int4: Path, ids: np.ndarray):
    candidate = CandidateConfig(engine="ort_genai", quant="int4", quant_block_size=16)
    engine = GenaiEngine.load(int4, candidate, CPU)
    quantized = engine.logits(ids)
    engine.close()
    engine = GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai"), CPU)
    reference = engine.logits(ids)
    engine.close()

    check_matmulnbits(int4 / "model.onnx", bits=4, block_size=16, accuracy_level=4)
    assert np.abs(quantized - reference).max() > 1e-3


def test_matmulnbits_check_rejects_unrequested_attributes_and_unquantized_graphs(fp32: Path, int4: Path):
    with pytest.raises(RuntimeError, match="block_size"):
        check_matmulnbits(int4 / "model.onnx", bits=4, block_size=32)
    with pytest.raises(RuntimeError, match="no MatMulNBits"):
        check_matmulnbits(fp32 / "model.onnx", bits=4)


def test_builder_failure_raises_with_the_builders_log(tmp_path: Path):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()

    with pytest.raises(RuntimeError, match=r"builder failed \(exit \d+\)(.|\n)*model_type"):
        run_genai_build(not_a_model, tmp_path / "out", precision="fp32", execution_provider="cpu")


def test_quantization_options_are_refused_for_float_precisions(tiny: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="int4/int8 only"):
        run_genai_build(tiny, tmp_path, precision="fp32", execution_provider="cpu", block_size=32)


@pytest.mark.skipif(og.is_cuda_available(), reason="this build of onnxruntime-genai has CUDA")
def test_cuda_is_refused_with_a_clear_message(fp32: Path):
    runtime = RuntimeOptions(device="cuda", threads=1, max_length=64, max_batch=1)

    with pytest.raises(RuntimeError, match=r"ort_genai on device cuda needs onnxruntime-genai-cuda"):
        GenaiEngine.load(fp32, CandidateConfig(engine="ort_genai"), runtime)
