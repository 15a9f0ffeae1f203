"""Decode-path fidelity: comparing greedy continuations, and the candidate's own generate() against
the fp32 reference's, where a broken KV cache must be caught even though prefill agrees exactly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from autoopt.accuracy.decode import (
    DECODE_MAX_LENGTH,
    DECODE_NEW_TOKENS,
    DECODE_POOL,
    DECODE_PROMPT_LEN,
    DECODE_PROMPTS,
    compare_continuations,
    decode_fidelity,
    decode_prompts,
    greedy_continuations,
    most_varied,
)
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions


def test_identical_continuations_agree_exactly() -> None:
    tokens = np.arange(12, dtype=np.int64).reshape(3, 4)

    f = compare_continuations(tokens, tokens.copy())

    assert f.prefix_agreement == 1.0 and f.token_agreement == 1.0
    assert (f.prompts, f.new_tokens, f.tokens) == (3, 4, 12)
    assert f.first_divergence == (4, 4, 4)


def test_prefix_agreement_stops_at_the_first_divergence() -> None:
    reference = np.zeros((2, 4), dtype=np.int64)
    candidate = reference.copy()
    candidate[0, 1] = 7  # prompt 0 diverges at its second token, then agrees again

    f = compare_continuations(reference, candidate)

    assert f.first_divergence == (1, 4)
    assert f.prefix_agreement == pytest.approx((1 / 4 + 1) / 2)
    assert f.token_agreement == pytest.approx(7 / 8)


def test_mismatched_continuation_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        compare_continuations(np.zeros((2, 4), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))


def test_decode_prompts_are_distinct_slices_of_the_stream() -> None:
    stream = np.arange(1000)

    prompts = decode_prompts(stream)

    assert prompts.shape == (DECODE_PROMPTS, DECODE_PROMPT_LEN) and prompts.dtype == np.int64
    for row in prompts:
        np.testing.assert_array_equal(row, np.arange(row[0], row[0] + DECODE_PROMPT_LEN))
    assert len({int(r[0]) for r in prompts}) == DECODE_PROMPTS


def test_too_short_stream_for_decode_prompts_is_refused() -> None:
    with pytest.raises(ValueError, match="decode prompts"):
        decode_prompts(np.arange(DECODE_PROMPTS * DECODE_PROMPT_LEN - 1))


class CountingEngine(Engine):
    """Echoes each row's last prompt token; records the batch of each call; may yield too few tokens."""

    name = "counting"

    def __init__(self, short: int = 0) -> None:
        self.short = short
        self.batches: list[int] = []

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> CountingEngine:
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        self.batches.append(input_ids.shape[0])
        for _ in range(max_new_tokens - self.short):
            yield input_ids[:, -1].copy()

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def test_continuations_run_in_calls_of_at_most_four_rows() -> None:
    engine = CountingEngine()
    prompts = np.arange(6 * 3, dtype=np.int64).reshape(6, 3)

    tokens = greedy_continuations(engine, prompts, 5)

    assert engine.batches == [4, 2]
    np.testing.assert_array_equal(tokens, np.repeat(prompts[:, -1:], 5, axis=1))


def test_a_short_generation_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="yielded 4 tokens for max_new_tokens=5"):
        greedy_continuations(CountingEngine(short=1), np.zeros((2, 3), dtype=np.int64), 5)


# --- real engines ---------------------------------------------------------------------------------


def _torch_engine(path: Path):
    from autoopt.engines.torch.engine import TorchEngine

    # The reference runs on every core; the same thread count keeps fp32 reductions bit-identical.
    runtime = RuntimeOptions(
        device="cpu", threads=len(os.sched_getaffinity(0)), max_length=max(128, DECODE_MAX_LENGTH), max_batch=4
    )
    return TorchEngine.load(path, CandidateConfig(engine="torch"), runtime)


class BrokenKVEngine(Engine):
    """Prefill and teacher-forced logits are the real fp32 torch engine's; decode breaks the KV path.

    forget: every decode step starts from an empty cache, so the model sees only the newest token.
    stale: the position stops advancing after the first decode step, so RoPE and the causal mask
    treat every later token as if it sat at the same place (it cannot see the tokens before it).
    """

    name = "broken_kv"

    def __init__(self, path: Path, mode: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.inner = _torch_engine(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.mode = mode

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> BrokenKVEngine:
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        import torch
        from transformers import DynamicCache

        with torch.inference_mode():
            ids = torch.from_numpy(np.ascontiguousarray(input_ids))
            cache = DynamicCache(config=self.model.config)
            positions = torch.arange(ids.shape[1])[None]
            for step in range(max_new_tokens):
                if self.mode == "forget" and step > 0:
                    cache, positions = DynamicCache(config=self.model.config), torch.zeros((1, 1), dtype=torch.long)
                out = self.model(input_ids=ids, cache=cache, position_ids=positions, use_cache=True, logits_to_keep=1)
                ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                if not (self.mode == "stale" and step > 0):
                    positions = positions[:, -1:] + 1
                yield ids[:, 0].numpy()

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return self.inner.logits(input_ids)

    def close(self) -> None:
        self.inner.close()


def _reference(model_path: Path, key: str, cache: Path) -> dict[str, np.ndarray]:
    from autoopt.accuracy.reference import ensure_reference
    from autoopt.config.schema import WorkloadConfig
    from autoopt.models.source import ResolvedModel

    workload = WorkloadConfig(name="test", eval_windows=8, eval_window_len=128)  # as conf/workload/chat.yaml
    return ensure_reference(ResolvedModel("test", model_path, key), workload, cache).load()


@pytest.mark.slow
def test_reference_file_holds_the_decode_continuations(tiny_model: Path, tmp_path: Path) -> None:
    ref = _reference(tiny_model, "tiny", tmp_path)

    assert ref["decode_prompts"].shape == (DECODE_PROMPTS, DECODE_PROMPT_LEN)
    assert ref["decode_tokens"].shape == (DECODE_PROMPTS, DECODE_NEW_TOKENS)
    assert ref["decode_prompts"].dtype == ref["decode_tokens"].dtype == np.int64
    pool = decode_prompts(ref["stream"], DECODE_POOL)
    assert all(any(np.array_equal(p, q) for q in pool) for p in ref["decode_prompts"])  # held-out slices
    assert len({r.tobytes() for r in ref["decode_tokens"]}) == DECODE_PROMPTS  # no two continuations alike


def test_the_most_varied_continuations_are_kept_and_no_two_alike() -> None:
    loop = [1, 2] * 4
    rows = np.asarray([[7] * 8, loop, list(range(8)), loop, [3, 4, 5, 3, 4, 5, 3, 4], list(range(10, 18))])

    assert most_varied(rows, 3).tolist() == [2, 4, 5]
    assert most_varied(rows, 4).tolist() == [1, 2, 4, 5]  # the loop once: its copy is skipped


@pytest.fixture(scope="module")
def trained(cache_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    from autoopt.config.schema import ModelConfig
    from autoopt.models.source import resolve_model

    model = resolve_model(ModelConfig(), cache_dir)
    return model.path, _reference(model.path, model.key, cache_dir)


def _prefill_top1(engine: Engine, ref: dict[str, np.ndarray]) -> float:
    from autoopt.accuracy.metrics import fidelity
    from autoopt.accuracy.reference import teacher_forced_logits

    return fidelity(ref["logits"], teacher_forced_logits(engine, ref["ids"]), ref["ids"]).top1_agreement


@pytest.mark.slow
def test_fp32_torch_engine_decodes_exactly_like_its_reference(trained: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, ref = trained
    engine = _torch_engine(path)

    f = decode_fidelity(engine, ref["decode_prompts"], ref["decode_tokens"])
    engine.close()

    assert f.prefix_agreement == 1.0 and f.token_agreement == 1.0 and f.self_agreement == 1.0
    assert f.tokens == DECODE_PROMPTS * DECODE_NEW_TOKENS


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["forget", "stale"])
def test_a_broken_kv_path_passes_prefill_but_fails_decode_fidelity(
    mode: str, trained: tuple[Path, dict[str, np.ndarray]]
) -> None:
    path, ref = trained
    engine = BrokenKVEngine(path, mode)

    top1 = _prefill_top1(engine, ref)
    f = decode_fidelity(engine, ref["decode_prompts"], ref["decode_tokens"])
    engine.close()

    assert top1 == 1.0
    assert f.prefix_agreement < 1.0 and f.token_agreement < 1.0
    # Its own logits() disagree with what its decode path chose, whatever the reference's continuation is.
    assert f.self_agreement is not None and f.self_agreement < 0.75
