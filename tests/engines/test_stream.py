"""Continuous batching's engine side: a row that joins a running stream, at any step, next to rows of other
lengths that join and leave around it, decodes the tokens its prompt decodes alone through `generate`.

On the trained built-in model (`slow`), where a row that saw another's padding or positions would decode
differently (see tests/engines/test_mixed_lengths.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.engines.stream import DecodeStream
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from tests.engines.decoding import greedy_tokens
from tests.engines.test_mixed_lengths import mixed_batch

RUNTIME = RuntimeOptions(device="cpu", threads=2, max_length=48, max_batch=4)
# (row, prompt length, step it joins at, new tokens): row 1 joins longer than the batch, row 2 shorter and after
# row 0 has left, row 3 once the others have grown past its length.
SCHEDULE = [(0, 9, 0, 6), (1, 16, 2, 10), (2, 5, 7, 8), (3, 12, 9, 6)]


def run_schedule(stream: DecodeStream, prompts: list[np.ndarray]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    left: set[int] = set()
    step = 0
    while step == 0 or stream.rows or any(start >= step for _, _, start, _ in SCHEDULE):
        for row, _, start, _ in SCHEDULE:
            if start == step:
                out[row] = [stream.join(row, prompts[row])]
        for row, token in stream.step().items():
            out[row].append(token)
        for row, _, _, new in SCHEDULE:
            if row in out and len(out[row]) >= new and row not in left:
                stream.leave(row)
                left.add(row)
        step += 1
    return out


@pytest.fixture(scope="module")
def builtin(cache_dir: Path) -> Path:
    return resolve_model(ModelConfig(), cache_dir).path


def _load(name: str, model: Path, cache: Path, **knobs: object) -> Engine:
    candidate = CandidateConfig(engine=name, **knobs)  # type: ignore[arg-type]
    built = run_pipeline(model, "builtin", plan(candidate, "cpu"), cache)
    return engine_class(name).load(built.artifact, candidate, RUNTIME)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "knobs"),
    [("torch", {}), ("torch", {"quant": "int8_dynamic"}), ("torch", {"quant": "bf16"})],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())) or "fp32",
)
def test_rows_joining_and_leaving_a_stream_decode_as_their_prompts_alone(
    name: str, knobs: dict, builtin: Path, cache_dir: Path
) -> None:
    engine = _load(name, builtin, cache_dir, **knobs)
    assert engine.continuous
    prompts, _ = mixed_batch(builtin, [length for _, length, _, _ in SCHEDULE])
    stream = engine.stream()
    got = run_schedule(stream, prompts)
    assert stream.rows == 0
    for row, _, _, new in SCHEDULE:
        np.testing.assert_array_equal(got[row][:new], greedy_tokens(engine, prompts[row][None], new)[0], f"row {row}")
    engine.close()
