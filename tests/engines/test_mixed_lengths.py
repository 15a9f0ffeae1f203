"""Rows of different prompt lengths in one `generate` call decode as each prompt does alone: every engine masks
the padding after a short prompt, whatever its ids, and positions each row from its own first token.

The check runs on the trained built-in model (`slow`): the tiny random model's next token hardly depends on
anything but the last one, so a row that attended to its padding would pass there (checked: with the mask
removed, every tiny-model case still passed; on this model every engine's case fails)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions, left_aligned, prompt_lengths_of
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
from autoopt.models import load_corpus
from tests.engines.decoding import built_engine, greedy_tokens

LENGTHS = [9, 16, 12]  # one batch; the batch of 3 also runs in a larger static slot (max_batch 4)
NEW = 10
RUNTIME = RuntimeOptions(device="cpu", threads=2, max_length=32, max_batch=4)


def mixed_batch(folder: Path, lengths: list[int] = LENGTHS) -> tuple[list[np.ndarray], np.ndarray]:
    """Prompts of `lengths` cut from held-out text, and the batch holding them, padded with other text's ids."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stream = np.asarray(tokenizer(" ".join(load_corpus().heldout[:4]))["input_ids"], dtype=np.int64)
    prompts = [stream[100 * (i + 1): 100 * (i + 1) + n] for i, n in enumerate(lengths)]
    ids = np.stack([stream[: max(lengths)]] * len(lengths))
    for row, ids_of_row in enumerate(prompts):
        ids[row, : len(ids_of_row)] = ids_of_row
    return prompts, ids


def assert_rows_decode_as_alone(engine: Engine, folder: Path, lengths: list[int] = LENGTHS, new: int = NEW) -> None:
    """Each row of the padded batch as its prompt alone; and a batch of equal rows the same before and after it (a
    static cache or generator reused after padding), with or without `prompt_lengths`."""
    prompts, ids = mixed_batch(folder, lengths)
    equal = np.stack([prompts[int(np.argmax(lengths))]] * len(lengths))
    before = greedy_tokens(engine, equal, new)
    steps = list(engine.generate(ids, new, prompt_lengths=np.asarray(lengths)))
    assert len(steps) == new and all(s.shape == (len(lengths),) and s.dtype == np.int64 for s in steps)
    together = np.stack(steps, axis=1)
    for row, ids_of_row in enumerate(prompts):
        np.testing.assert_array_equal(together[row], greedy_tokens(engine, ids_of_row[None], new)[0], f"row {row}")
    np.testing.assert_array_equal(greedy_tokens(engine, equal, new), before)
    full = np.full(len(lengths), equal.shape[1])
    np.testing.assert_array_equal(np.stack(list(engine.generate(equal, new, prompt_lengths=full)), axis=1), before)


@pytest.mark.slow
def test_each_shorter_row_decodes_differently_with_its_padding_seen(builtin: Path) -> None:
    """What lets the check below fail: a shorter row's tokens change when its padding is taken for prompt, after
    it (where genai pads) or before it (where the other engines move it)."""
    engine = built_engine("torch", builtin, Path(), RUNTIME)
    prompts, ids = mixed_batch(builtin)
    width = ids.shape[1]
    for row, ids_of_row in enumerate(prompts):
        if len(ids_of_row) == width:
            continue
        alone = greedy_tokens(engine, ids_of_row[None], NEW)
        assert not np.array_equal(alone, greedy_tokens(engine, ids[row][None], NEW))
        before = np.concatenate([ids[row, len(ids_of_row):], ids_of_row])
        assert not np.array_equal(alone, greedy_tokens(engine, before[None], NEW))
    engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("torch", {}),
        ("torch", {"kv_cache": "static"}),
        ("torch", {"quant": "bf16"}),
        ("torch_compiled", {"compile_mode": "none"}),
        ("torch_compiled", {"compile_mode": "none", "quant": "int8_weight"}),
        ("ort", {}),
        ("ort", {"quant": "int4"}),
        ("ort_genai", {}),
        ("ort_genai", {"quant": "int4", "kv_cache": "static"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())) or "fp32",
)
def test_each_row_of_a_mixed_batch_decodes_as_its_prompt_alone(
    name: str, knobs: dict, builtin: Path, cache_dir: Path
) -> None:
    engine = built_engine(name, builtin, cache_dir, RUNTIME, **knobs)
    assert engine.mixed_lengths
    assert_rows_decode_as_alone(engine, builtin)
    engine.close()


@pytest.mark.slow
def test_the_compiled_step_decodes_a_mixed_batch_with_the_graphs_load_compiled(builtin: Path) -> None:
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=4, max_length=32, max_batch=4)
    candidate = CandidateConfig(engine="torch_compiled", compile_mode="default", prefill_bucket=32)
    engine = TorchCompiledEngine.load(builtin, candidate, runtime)
    assert set(engine.compile_report) == {"decode b4", "prefill b4 len32"}
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert_rows_decode_as_alone(engine, builtin)
    engine.close()


def test_left_alignment_moves_each_prompt_to_the_end_and_masks_the_padding_before_it() -> None:
    ids = np.array([[1, 2, 9, 9], [3, 4, 5, 6]], dtype=np.int64)
    shifted, mask = left_aligned(ids, [2, 4])
    np.testing.assert_array_equal(shifted, [[9, 9, 1, 2], [3, 4, 5, 6]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [1, 1, 1, 1]])


@pytest.mark.parametrize("lengths", [[2], [0, 4], [2, 5], [[2, 4]]])
def test_prompt_lengths_outside_the_rows_are_refused(lengths: list) -> None:
    with pytest.raises(ValueError, match="prompt_lengths"):
        prompt_lengths_of(np.zeros((2, 4), dtype=np.int64), lengths)
