"""Static KV caches are allocated once per batch size and reset per request: consecutive requests on one
engine decode exactly like fresh engines (nothing leaks through the reused buffer), static decodes like
dynamic, and the buffer is not allocated again by later requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from tests.engines.decoding import greedy_tokens as _tokens
from tests.engines.decoding import prompt as _prompt

MAX_LENGTH = 40
RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=MAX_LENGTH, max_batch=2)
# (batch, prompt_len, new): different prompts, lengths and batch sizes in a row; the last fills max_length.
REQUESTS = [(1, 12, 8), (2, 20, 6), (1, 7, 14), (2, 9, 5), (1, 30, 10)]


@pytest.fixture(scope="module")
def artifacts(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("static-kv-cache")
    built = {}
    for name in ("torch", "ort_genai"):
        steps = plan(CandidateConfig(engine=name), "cpu")
        built[name] = run_pipeline(tiny_model, "tiny", steps, cache).artifact
    return built


def _load(name: str, artifact: Path, kv_cache: str) -> Engine:
    return engine_class(name).load(artifact, CandidateConfig(engine=name, kv_cache=kv_cache), RUNTIME)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "ort_genai"])
def test_consecutive_static_requests_decode_like_fresh_engines_and_like_dynamic(name: str, artifacts) -> None:
    reused = _load(name, artifacts[name], "static")
    dynamic = _load(name, artifacts[name], "dynamic")

    for i, (batch, prompt_len, new) in enumerate(REQUESTS):
        ids = _prompt(i, batch, prompt_len)
        got = _tokens(reused, ids, new)
        fresh = _load(name, artifacts[name], "static")
        expected = _tokens(fresh, ids, new)
        fresh.close()

        np.testing.assert_array_equal(got, expected, err_msg=f"request {i}: state leaked through the reused cache")
        np.testing.assert_array_equal(got, _tokens(dynamic, ids, new), err_msg=f"request {i}: static != dynamic")
    reused.close()
    dynamic.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "ort_genai"])
def test_a_request_stopped_early_leaves_nothing_for_the_next(name: str, artifacts) -> None:
    engine = _load(name, artifacts[name], "static")
    ids = _prompt(0, 1, 12)
    expected = _tokens(engine, ids, 8)

    stream = engine.generate(_prompt(1, 1, 25), 10)
    next(stream), next(stream)
    stream.close()  # a consumer that stops at end of text
    got = _tokens(engine, ids, 8)
    engine.close()

    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "ort_genai"])
def test_static_kv_is_allocated_once_per_batch_size(name: str, artifacts) -> None:
    engine = _load(name, artifacts[name], "static")
    assert engine.static_kv_allocations() == 0

    counts = []
    for i, (batch, prompt_len, new) in enumerate(REQUESTS):
        _tokens(engine, _prompt(i, batch, prompt_len), new)
        counts.append(engine.static_kv_allocations())
    engine.close()

    assert counts == [1, 2, 2, 2, 2]  # batch 1, then batch 2; never again


@pytest.mark.slow
def test_torch_static_cache_keeps_its_buffers_across_requests(artifacts) -> None:
    engine = _load("torch", artifacts["torch"], "static")

    def buffers() -> list[int]:
        cache = engine._static[1]  # the engine's own cache for batch 1
        return [t.data_ptr() for layer in cache.layers for t in (layer.keys, layer.values)]

    _tokens(engine, _prompt(0, 1, 12), 8)
    first = buffers()
    _tokens(engine, _prompt(1, 1, 20), 12)
    second = buffers()
    engine.close()

    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "ort_genai"])
def test_a_request_longer_than_max_length_gets_a_larger_cache_and_the_same_tokens(name: str, artifacts) -> None:
    engine = _load(name, artifacts[name], "static")
    dynamic = _load(name, artifacts[name], "dynamic")
    ids = _prompt(0, 1, MAX_LENGTH - 5)
    _tokens(engine, _prompt(1, 1, 10), 4)

    got = _tokens(engine, ids, 10)

    assert engine.static_kv_allocations() == 2
    np.testing.assert_array_equal(got, _tokens(dynamic, ids, 10))
    engine.close()
    dynamic.close()


def test_dynamic_kv_reports_no_static_allocations(tiny_model: Path) -> None:
    engine = _load("torch", tiny_model, "dynamic")
    list(engine.generate(_prompt(0, 1, 5), 3))

    assert engine.static_kv_allocations() is None
    engine.close()
