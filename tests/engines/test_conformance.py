"""Every engine that can run here meets the one contract, checked against HF transformers fp32 on
the same tiny model: greedy tokens, teacher-forced logits, shapes and dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.passes.registry import PassStep

FP32_ENGINES = ["torch", "ort", "ort_genai"]
PROMPT = np.array([[5, 17, 42, 7, 99, 3, 11, 64], [8, 1, 2, 250, 31, 9, 77, 120]], dtype=np.int64)
NEW = 6


@pytest.fixture(scope="module")
def hf_reference(tiny_model: Path) -> tuple[np.ndarray, np.ndarray]:
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = torch.from_numpy(PROMPT)
    with torch.inference_mode():
        tokens = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)[:, PROMPT.shape[1]:]
        logits = model(ids).logits
    return tokens.numpy(), logits.numpy()


def _load(name: str, model: Path, cache: Path, **knobs: object):
    candidate = CandidateConfig(engine=name, **knobs)  # type: ignore[arg-type]
    steps: list[PassStep] = plan(candidate, "cpu")
    built = run_pipeline(model, "tiny", steps, cache)
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=PROMPT.shape[1] + NEW, max_batch=PROMPT.shape[0])
    return engine_class(name).load(built.artifact, candidate, runtime)


@pytest.mark.slow
@pytest.mark.parametrize("name", FP32_ENGINES)
def test_fp32_engine_reproduces_transformers(name: str, tiny_model: Path, tmp_path_factory, hf_reference) -> None:
    ref_tokens, ref_logits = hf_reference
    engine = _load(name, tiny_model, tmp_path_factory.mktemp(f"cache-{name}"))

    steps = list(engine.generate(PROMPT, NEW))
    logits = engine.logits(PROMPT)
    engine.close()

    assert len(steps) == NEW
    assert all(s.shape == (2,) and s.dtype == np.int64 for s in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), ref_tokens)
    assert logits.dtype == np.float32 and logits.shape == ref_logits.shape
    np.testing.assert_allclose(logits, ref_logits, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["torch", "ort", "ort_genai", "ort_tensorrt"])
def test_cuda_is_refused_with_one_clear_line_when_absent(name: str, tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    candidate = CandidateConfig(engine=name)
    runtime = RuntimeOptions(device="cuda", threads=1, max_length=16, max_batch=1)

    with pytest.raises(RuntimeError) as err:
        engine_class(name).load(tiny_model, candidate, runtime)

    assert "cuda" in str(err.value).lower()
    assert "\n" not in str(err.value)
