"""Continuous batching's engine side: a row that joins a running stream, at any step, next to rows of other
lengths that join and leave around it, decodes the tokens its prompt decodes alone through `generate`.

On the trained built-in model (`slow`), where a row that saw another's padding or positions would decode
differently (see tests/engines/test_mixed_lengths.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.sampling import RowSampler, Sampling
from autoopt.engines.stream import DecodeStream, NumpyKV, PaddedStream
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
from tests.engines.decoding import built_engine, greedy_tokens
from tests.engines.test_mixed_lengths import mixed_batch

RUNTIME = RuntimeOptions(device="cpu", threads=2, max_length=48, max_batch=4)
# (row, prompt length, step it joins at, new tokens): row 1 joins longer than the batch, row 2 shorter and after
# row 0 has left, row 3 once the others have grown past its length.
SCHEDULE = [(0, 9, 0, 6), (1, 16, 2, 10), (2, 5, 7, 8), (3, 12, 9, 6)]


def run_schedule(stream: DecodeStream, prompts: list[np.ndarray], chunk: int = 0) -> dict[int, list[int]]:
    """SCHEDULE's rows through `stream`, each prompt joining whole, or `chunk` tokens a step (`begin`, `prefill`)
    while the others decode."""
    out: dict[int, list[int]] = {}
    left: set[int] = set()
    parting: set[int] = set()
    step = 0
    while step == 0 or stream.rows or parting or any(start >= step for _, _, start, _ in SCHEDULE):
        for row, _, start, _ in SCHEDULE:
            if start == step and chunk:
                stream.begin(row, prompts[row])
                parting.add(row)
            elif start == step:
                out[row] = [stream.join(row, prompts[row])]
        for row in sorted(parting):
            if (token := stream.prefill(row, chunk)) is not None:
                out[row] = [token]
                parting.remove(row)
        for row, token in stream.step().items():
            out[row].append(token)
        for row, _, _, new in SCHEDULE:
            if row in out and len(out[row]) >= new and row not in left:
                stream.leave(row)
                left.add(row)
        step += 1
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("torch", {}),
        ("torch", {"quant": "int8_dynamic"}),
        ("torch", {"quant": "bf16"}),
        ("torch_compiled", {"compile_mode": "none"}),
        ("torch_compiled", {"compile_mode": "none", "quant": "int8_weight"}),
        ("ort", {}),
        ("ort", {"quant": "int8_weight"}),
        ("ort", {"quant": "int4"}),
        ("ort", {"fuse": True}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join("fused" if x is True else str(x) for x in v.values()) or "fp32",
)
def test_rows_joining_and_leaving_a_stream_decode_as_their_prompts_alone(
    name: str, knobs: dict, builtin: Path, cache_dir: Path
) -> None:
    engine = built_engine(name, builtin, cache_dir, RUNTIME, **knobs)
    assert engine.continuous
    assert_stream_decodes_as_alone(engine, builtin)
    engine.close()


def assert_stream_decodes_as_alone(engine: Engine, folder: Path, chunk: int = 0) -> None:
    prompts, _ = mixed_batch(folder, [length for _, length, _, _ in SCHEDULE])
    stream = engine.stream()
    got = run_schedule(stream, prompts, chunk)
    assert stream.rows == 0
    for row, _, _, new in SCHEDULE:
        np.testing.assert_array_equal(got[row][:new], greedy_tokens(engine, prompts[row][None], new)[0], f"row {row}")


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 4], ids=["joined-in-the-b1-slot", "joined-in-a-row-of-its-own"])
def test_the_compiled_step_serves_a_stream_without_recompiling(builtin: Path, batch_size: int) -> None:
    """The stream steps through the graph `load` compiled for the largest slot; its prompts are prefilled in the
    engine's one-row slot, or where it has none (batch_size = max_batch) in an uncompiled one-row slot, whole or in
    parts."""
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=batch_size, max_length=48, max_batch=4)
    engine = TorchCompiledEngine.load(builtin, CandidateConfig(engine="torch_compiled"), runtime)
    assert set(engine.compile_report) == {f"decode b{b}" for b in {batch_size, 4}}
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert_stream_decodes_as_alone(engine, builtin)
        assert_stream_decodes_as_alone(engine, builtin, chunk=2)
    engine.close()


def _next_token(context: list[tuple[int, int]]) -> int:
    return hash(tuple(context)) % 997


class _Visible(PaddedStream):
    """A model whose cache holds (token, position) pairs and whose next token depends on every pair a row sees:
    it checks, at every step, that each row sees exactly its own context at positions 0..n-1, packed at the right."""

    def __init__(self) -> None:
        super().__init__(NumpyKV(), "visible", samples=False)

    def _prefill(self, prompt_ids: np.ndarray, past: list[np.ndarray] | None,
                 sampler: RowSampler | None) -> tuple[int, list[np.ndarray]]:
        done = 0 if past is None else past[0].shape[2]
        n = prompt_ids.shape[1]
        kv = np.stack([prompt_ids[0], np.arange(done, done + n)], axis=-1)[None, None]
        kv = kv if past is None else np.concatenate([past[0], kv], axis=2)
        return _next_token([(int(p), int(t)) for t, p in kv[0, 0]]), [kv]

    def _decode(self, tokens: np.ndarray, kv: list[np.ndarray], mask: np.ndarray,
                samplers: list[RowSampler | None]) -> tuple[np.ndarray, list]:
        assert kv[0].shape[2] == mask.shape[1] - 1
        new = np.stack([tokens[:, 0], mask[:, :-1].sum(axis=-1)], axis=-1)[:, None, None, :]
        cache = np.concatenate([kv[0], new], axis=2)
        out = []
        for row in range(cache.shape[0]):
            seen = cache[row, 0][mask[row] == 1]
            assert seen[:, 1].tolist() == list(range(len(seen)))
            assert mask[row, -len(seen):].all() and not mask[row, : -len(seen)].any()
            out.append(_next_token([(int(p), int(t)) for t, p in seen]))
        return np.array(out), [cache]


def _alone(prompt: np.ndarray, new: int) -> list[int]:
    context, out = [(i, int(t)) for i, t in enumerate(prompt)], []
    for _ in range(new):
        out.append(_next_token(context))
        context.append((len(context), out[-1]))
    return out


class _Drawn(_Visible):
    """`_Visible` whose rows with a sampler decode their sampler's seed instead (and take it on join); `drawn` lists
    whether each prefill call had a sampler."""

    def __init__(self) -> None:
        PaddedStream.__init__(self, NumpyKV(), "drawn", samples=True)
        self.drawn: list[bool] = []

    def _prefill(self, prompt_ids: np.ndarray, past: list[np.ndarray] | None,
                 sampler: RowSampler | None) -> tuple[int, list[np.ndarray]]:
        self.drawn.append(sampler is not None)
        token, kv = super()._prefill(prompt_ids, past, None)
        return (token if sampler is None else -sampler.sampling.seed), kv

    def _decode(self, tokens: np.ndarray, kv: list[np.ndarray], mask: np.ndarray,
                samplers: list[RowSampler | None]) -> tuple[np.ndarray, list]:
        out, cache = super()._decode(tokens, kv, mask, samplers)
        return np.array([t if s is None else -s.sampling.seed for t, s in zip(out, samplers, strict=True)]), cache


def test_each_row_keeps_its_own_sampler_as_rows_join_and_leave() -> None:
    stream, prompt = _Drawn(), np.arange(1, 6)
    stream.join(0, prompt)
    stream.join(1, prompt, Sampling(temperature=1.0, seed=11))
    stream.join(2, prompt)
    stream.leave(0)  # the rows behind it move up
    stream.join(3, prompt, Sampling(temperature=1.0, seed=33))
    stream.leave(2)
    for _ in range(2):
        tokens = stream.step()
        assert tokens == {1: -11, 3: -33}


@pytest.mark.parametrize("seed", range(20))
def test_random_joins_and_leaves_keep_each_rows_context_and_the_cache_no_longer_than_its_longest_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream, live, got, want = _Visible(), {}, {}, {}
    for key in range(40):
        if len(live) < 4 and rng.random() < 0.6:
            prompt, new = rng.integers(1, 900, rng.integers(1, 20)), int(rng.integers(1, 12))
            want[key], got[key], live[key] = _alone(prompt, new), [stream.join(key, prompt)], new
        for row, token in stream.step().items():
            got[row].append(token)
        for row in [r for r, new in live.items() if len(got[r]) >= new]:
            stream.leave(row)
            del live[row]
        if live:
            longest = int(stream._mask.sum(axis=1).max())  # the longest live row's context
            assert stream._mask.shape[1] == longest == stream._kv[0].shape[2]
    for row, tokens in got.items():
        assert tokens[: len(want[row])] == want[row][: len(tokens)]


@pytest.mark.parametrize("seed", range(10))
def test_prompts_prefilled_in_parts_between_steps_join_with_the_context_they_have_alone(seed: int) -> None:
    """Joiners begin, take parts of 1..7 tokens between the running rows' steps (a few at once), and leave, some
    before their prompt is all in: every row decodes as alone, and no part shows in another row's context."""
    rng = np.random.default_rng(seed)
    stream, live, parting, got, want = _Visible(), {}, {}, {}, {}
    for key in range(40):
        if len(live) + len(parting) < 4 and rng.random() < 0.6:
            prompt, new = rng.integers(1, 900, rng.integers(1, 20)), int(rng.integers(1, 12))
            want[key], parting[key] = _alone(prompt, new), new
            stream.begin(key, prompt)
        for row in list(parting):
            if rng.random() < 0.1:  # its client went away mid-prefill
                stream.leave(row)
                del parting[row]
            elif (token := stream.prefill(row, int(rng.integers(1, 8)))) is not None:
                got[row], live[row] = [token], parting.pop(row)
        assert stream.rows == len(live)
        for row, token in stream.step().items():
            got[row].append(token)
        for row in [r for r, new in live.items() if len(got[r]) >= new]:
            stream.leave(row)
            del live[row]
    assert got
    for row, tokens in got.items():
        assert tokens[: len(want[row])] == want[row][: len(tokens)]


def test_a_sampler_draws_only_the_token_after_the_last_part() -> None:
    stream, prompt = _Drawn(), np.arange(1, 11)
    stream.begin(0, prompt, Sampling(temperature=1.0, seed=5))
    assert [stream.prefill(0, 4) for _ in range(2)] == [None, None]
    assert stream.rows == 0
    assert stream.prefill(0, 4) == -5 and stream.rows == 1
    assert stream.drawn == [False, False, True]  # a draw advances the row's random stream: only the last part's


def test_a_row_cannot_begin_twice_nor_join_while_its_prompt_is_in_parts() -> None:
    stream = _Visible()
    stream.begin(0, np.arange(1, 6))
    for again in (stream.begin, stream.join):
        with pytest.raises(ValueError, match="already in the stream"):
            again(0, np.arange(1, 6))
    with pytest.raises(ValueError, match="at least 1 token"):
        stream.prefill(0, 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("torch", {}),
        ("torch_compiled", {"compile_mode": "none"}),
        ("torch_compiled", {"compile_mode": "none", "prefill_bucket": 32}),
        ("ort", {}),
        ("ort", {"quant": "int4"}),
    ],
    ids=["torch", "torch_compiled", "torch_compiled-bucketed", "ort", "ort-int4"],
)
def test_prompts_prefilled_in_parts_decode_as_their_prompts_alone(
    name: str, knobs: dict, builtin: Path, cache_dir: Path
) -> None:
    """SCHEDULE's rows, each prompt prefilled 2 tokens a step (row 1's 16 tokens take 8 steps, its parts alternating
    with rows 0's and 2's, while the others decode), on the trained model: each part attends to the parts before it at
    the right positions (torch_compiled with a bucket: each part padded to 32 at its offset in the 48-position
    cache)."""
    engine = built_engine(name, builtin, cache_dir, RUNTIME, **knobs)
    assert_stream_decodes_as_alone(engine, builtin, chunk=2)
    engine.close()


@pytest.mark.slow
def test_a_compiled_stream_that_never_empties_stays_within_the_static_cache(builtin: Path) -> None:
    """Rows joining every 6 steps, each 8 + 12 tokens, overlap for 66 steps: the cache (32 positions) holds any
    one of them, and the stream cuts the columns no live row uses, so it never runs out of positions."""
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=32, max_batch=4)
    engine = TorchCompiledEngine.load(builtin, CandidateConfig(engine="torch_compiled", compile_mode="none"), runtime)
    text = mixed_batch(builtin, [80])[0][0]
    prompts = [text[8 * i : 8 * (i + 1)] for i in range(10)]
    stream, got = engine.stream(), {}
    for step in range(66):
        if step % 6 == 0 and step < 60:
            got[step // 6] = [stream.join(step // 6, prompts[step // 6])]
        for row, token in stream.step().items():
            got[row].append(token)
            if len(got[row]) == 12:
                stream.leave(row)
    assert stream.rows == 0
    for row, tokens in got.items():
        np.testing.assert_array_equal(tokens, greedy_tokens(engine, prompts[row][None], 12)[0], f"row {row}")
    engine.close()
