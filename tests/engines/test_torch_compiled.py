"""The torch_compiled engine's own decode loop (static KV cache, fixed-shape decode step, prefill apart)
decodes the eager torch engine's greedy tokens: eagerly here (fast), compiled in the `slow` tests (each
CPU compile takes tens of seconds, so those load as few graphs as cover the paths). Knob values it cannot
run are refused in one line before any load; weight-only int8 stays close to fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.torch_compiled import INFO
from autoopt.engines.torch_compiled.engine import (
    RUNTIME_FILE,
    TorchCompiledEngine,
    prefill_lengths,
    runtime_settings,
)

RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=2)
# (batch, prompt_len, new): different prompts, lengths and batch sizes in a row on one engine.
REQUESTS = [(1, 12, 8), (2, 20, 6), (1, 7, 14), (2, 35, 6)]


def _candidate(quant: str = "none", compile_mode: str = "none", prefill_bucket: int = 0, **knobs: object):
    candidate = CandidateConfig(engine="torch_compiled", quant=quant, **knobs)  # type: ignore[arg-type]
    # Set as attributes until CandidateConfig declares these knobs (the engine reads them with getattr).
    candidate.compile_mode = compile_mode  # type: ignore[attr-defined]
    candidate.prefill_bucket = prefill_bucket  # type: ignore[attr-defined]
    return candidate


def _prompt(i: int, batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(1, 500, size=(batch, length), dtype=np.int64)


def _tokens(engine: Engine, ids: np.ndarray, new: int) -> np.ndarray:
    steps = list(engine.generate(ids, new))
    assert len(steps) == new and all(s.shape == (ids.shape[0],) and s.dtype == np.int64 for s in steps)
    return np.stack(steps, axis=1)


@pytest.fixture(scope="module")
def eager(tiny_model: Path) -> Engine:
    from autoopt.engines.torch.engine import TorchEngine

    return TorchEngine.load(tiny_model, CandidateConfig(engine="torch"), RUNTIME)


def _assert_decodes_like(engine: Engine, reference: Engine, requests: list[tuple[int, int, int]]) -> None:
    for i, (batch, prompt_len, new) in enumerate(requests):
        ids = _prompt(i, batch, prompt_len)
        np.testing.assert_array_equal(_tokens(engine, ids, new), _tokens(reference, ids, new), err_msg=f"request {i}")


# ------------------------------------------------------------------------------------------ knob validation


@pytest.mark.parametrize(
    ("candidate", "runtime", "words"),
    [
        (_candidate(compile_mode="max-autotune"), RUNTIME, ["compile_mode=max-autotune", "reduce-overhead"]),
        (_candidate(prefill_bucket=16), RUNTIME, ["prefill_bucket=16", "32"]),
        (_candidate(quant="int8_dynamic"), RUNTIME, ["quant=int8_dynamic", "int8_weight"]),
        (_candidate(quant="fp16"), RUNTIME, ["quant=fp16", "on cpu"]),
        (_candidate(quant="int4", quant_block_size=16), RUNTIME, ["quant_block_size=16", "32"]),
        (_candidate(), RuntimeOptions(device="tpu", threads=1, max_length=8, max_batch=1), ["device=tpu"]),
    ],
)
def test_values_it_cannot_run_are_refused_in_one_line(candidate, runtime, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        runtime_settings(candidate, runtime)
    message = str(err.value)
    assert "\n" not in message
    assert all(w in message for w in words), message


def test_settings_have_one_cache_per_batch_size_and_declared_quants_match_info() -> None:
    settings = runtime_settings(_candidate(quant="int4", compile_mode="reduce-overhead", prefill_bucket=32), RUNTIME)
    assert settings["batch_sizes"] == [1, 2]
    assert settings["dtype"] == "bfloat16" and settings["group_size"] == 32
    single = RuntimeOptions(device="cpu", threads=2, batch_size=4, max_length=16, max_batch=4)
    assert runtime_settings(_candidate(), single)["batch_sizes"] == [4]
    for device, quants in INFO.quants.items():
        for quant in quants:
            runtime = RuntimeOptions(device=device, threads=1, max_length=8, max_batch=1)
            assert runtime_settings(_candidate(quant=quant), runtime)["quant"] == quant


def test_int4_group_sizes_the_kernels_cannot_take_are_pruned_before_any_build() -> None:
    assert INFO.rule is not None
    assert "quant_block_size" in (INFO.rule(_candidate(quant="int4", quant_block_size=16), "cpu") or "")
    assert INFO.rule(_candidate(quant="int4", quant_block_size=128), "cuda") is None
    assert INFO.rule(_candidate(quant="int8_weight", quant_block_size=16), "cpu") is None  # per channel


def test_prefill_buckets_cover_every_prompt_that_fits_the_cache() -> None:
    assert prefill_lengths(0, 160) == []
    assert prefill_lengths(64, 160) == [64, 128, 160]
    assert prefill_lengths(32, 64) == [32, 64]
    assert prefill_lengths(128, 40) == [40]


def test_cuda_is_refused_with_one_clear_line_when_absent(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    runtime = RuntimeOptions(device="cuda", threads=1, max_length=16, max_batch=1)
    with pytest.raises(RuntimeError) as err:
        TorchCompiledEngine.load(tiny_model, _candidate(), runtime)
    assert "cuda" in str(err.value).lower() and "\n" not in str(err.value)


# ------------------------------------------------------------------- the loop, uncompiled (no compile here)


def test_uncompiled_loop_decodes_like_eager_torch_across_requests(tiny_model: Path, eager: Engine) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)

    _assert_decodes_like(engine, eager, REQUESTS)

    assert engine.static_kv_allocations() == 2  # batch 1 and 2, allocated by load, not by requests
    assert set(engine.compile_report) == {"decode b1", "decode b2"}
    engine.close()


def test_requests_beyond_the_static_cache_are_refused(tiny_model: Path) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)
    with pytest.raises(ValueError, match="max_length"):
        next(engine.generate(_prompt(0, 1, 30), 12))
    with pytest.raises(ValueError, match="max_batch"):
        next(engine.generate(_prompt(0, 3, 8), 2))
    engine.close()


def test_int8_weight_logits_stay_close_to_fp32(tiny_model: Path, eager: Engine) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(quant="int8_weight"), RUNTIME)
    ids = _prompt(7, 2, 32)

    ref, got = eager.logits(ids), engine.logits(ids)

    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    assert 0 < np.abs(ref - got).max() < 0.05  # quantized (not the fp32 weights), yet close
    assert _tokens(engine, ids[:1, :16], 4).shape == (1, 4)
    engine.close()


def test_runtime_config_holds_the_settings_load_applies(tmp_path: Path) -> None:
    candidate = _candidate(quant="int8_weight", compile_mode="reduce-overhead", prefill_bucket=64)

    TorchCompiledEngine.write_runtime_config(tmp_path, candidate, RUNTIME)

    written = json.loads((tmp_path / RUNTIME_FILE).read_text())
    assert written == runtime_settings(candidate, RUNTIME)
    assert "def load(folder)" in TorchCompiledEngine.plain_runtime_snippet()


# ---------------------------------------------------------------------------- compiled (slow: CPU compiles)


@pytest.mark.slow
def test_compiled_decode_and_bucketed_prefill_decode_like_eager_torch(tiny_model: Path, eager: Engine) -> None:
    # One batch size (batch 1 runs padded into it) and two prefill buckets: three graphs.
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=2, max_length=40, max_batch=2)
    engine = TorchCompiledEngine.load(tiny_model, _candidate(compile_mode="default", prefill_bucket=32), runtime)

    assert set(engine.compile_report) == {"decode b2", "prefill b2 len32", "prefill b2 len40"}
    assert engine.compile_seconds() > 0
    with torch._dynamo.config.patch(error_on_recompile=True):  # load compiled every graph a request uses
        _assert_decodes_like(engine, eager, REQUESTS)  # prompts 7-20 in the 32 bucket, 35 in the 40 one
    assert engine.static_kv_allocations() == 1
    engine.close()


@pytest.mark.slow
def test_compiled_int8_reduce_overhead_on_cpu_decodes_like_its_uncompiled_loop(tiny_model: Path) -> None:
    # reduce-overhead on the CPU is inductor without CUDA graphs: the same tokens as the loop run eagerly.
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=1)
    compiled = TorchCompiledEngine.load(tiny_model, _candidate("int8_weight", "reduce-overhead"), runtime)
    uncompiled = TorchCompiledEngine.load(tiny_model, _candidate("int8_weight", "none"), runtime)

    with torch._dynamo.config.patch(error_on_recompile=True):
        _assert_decodes_like(compiled, uncompiled, [(1, 12, 10), (1, 25, 12)])
    assert list(compiled.compile_report) == ["decode b1"]
    compiled.close()
    uncompiled.close()
