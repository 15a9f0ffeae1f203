"""Rows of mixed prompt lengths in one batch, and continuous batching, on a CUDA device: each row decodes as its
prompt alone. On the trained built-in model, where a row that saw another's padding or positions decodes
differently (tests/engines/test_mixed_lengths.py); fp32 only, since half-precision kernels may round a batch
differently from one row. Skipped, with the reason, where no CUDA device exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
from autoopt.models.source import resolve_model
from tests.engines.decoding import built_engine
from tests.engines.test_mixed_lengths import assert_rows_decode_as_alone
from tests.engines.test_stream import assert_stream_decodes_as_alone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")

CUDA = RuntimeOptions(device="cuda", threads=2, max_length=48, max_batch=4)


@pytest.fixture(scope="module")
def builtin(cache_dir: Path) -> Path:
    return resolve_model(ModelConfig(), cache_dir).path


@pytest.mark.parametrize("knobs", [{}, {"attn_backend": "math"}, {"kv_cache": "static"}],
                         ids=lambda k: "-".join(map(str, k.values())) or "auto")
def test_torch_on_cuda_decodes_each_row_of_a_mixed_batch_as_alone(builtin: Path, cache_dir: Path, knobs: dict) -> None:
    engine = built_engine("torch", builtin, cache_dir, CUDA, **knobs)
    assert engine.mixed_lengths
    assert_rows_decode_as_alone(engine, builtin)
    engine.close()


def test_the_graph_captured_step_decodes_a_mixed_batch_as_alone_without_recompiling(builtin: Path) -> None:
    """The per-row start buffer (padding masked, rotary offset) is written before each request and read by the
    captured graphs: a mixed batch must neither recompile nor skip the CUDA graphs."""
    runtime = RuntimeOptions(device="cuda", threads=2, batch_size=4, max_length=32, max_batch=4)
    candidate = CandidateConfig(engine="torch_compiled", compile_mode="reduce-overhead", prefill_bucket=32)
    engine = TorchCompiledEngine.load(builtin, candidate, runtime)
    skips = _cudagraph_skips()
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert_rows_decode_as_alone(engine, builtin)
    assert engine.cudagraph_skips == 0 and _cudagraph_skips() == skips  # none at load, none since
    engine.close()


@pytest.mark.parametrize("backend", ["auto", "math"])
def test_rows_joining_and_leaving_a_stream_on_cuda_decode_as_alone(builtin: Path, cache_dir: Path, backend: str) -> None:
    engine = built_engine("torch", builtin, cache_dir, CUDA, attn_backend=backend)
    assert engine.continuous
    assert_stream_decodes_as_alone(engine, builtin)
    engine.close()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_stream_on_the_graph_captured_step_decodes_as_alone_without_recompiling(builtin: Path, batch_size: int) -> None:
    """Joins and leaves move the rows' columns in place in the slot's buffers, which the captured graph reads; prompts
    prefilled in parts (2 tokens a step, two prompts' parts alternating in the one-row cache) join the same way."""
    runtime = RuntimeOptions(device="cuda", threads=2, batch_size=batch_size, max_length=48, max_batch=4)
    engine = TorchCompiledEngine.load(builtin, CandidateConfig(engine="torch_compiled", compile_mode="reduce-overhead"),
                                      runtime)
    skips = _cudagraph_skips()
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert_stream_decodes_as_alone(engine, builtin)
        assert_stream_decodes_as_alone(engine, builtin, chunk=2)
    assert engine.cudagraph_skips == 0 and _cudagraph_skips() == skips  # none at load, none since
    engine.close()


def _cudagraph_skips() -> int:
    """inductor's running count of graphs compiled without the CUDA graph reduce-overhead asked for."""
    return int(torch._dynamo.utils.counters["inductor"]["cudagraph_skips"])
