"""Sampling rows through each engine (every one `samples`): a sampling row draws from its own logits with its own
seed, whatever shares its batch, and the greedy rows beside it decode exactly as alone.

The per-engine checks run on the trained built-in model (`slow`: builds), whose next token depends on its context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.config.knobs import ENGINES
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class, engine_info
from autoopt.engines.sampling import Sampling
from tests.engines.decoding import built_engine, greedy_tokens, prompt
from tests.engines.test_mixed_lengths import mixed_batch

RUNTIME = RuntimeOptions(device="cpu", threads=2, max_length=48, max_batch=4)
LENGTHS = [9, 16, 12]
NEW = 10
HOT = Sampling(temperature=1.5, seed=11)


def tokens_of(engine: Engine, ids: np.ndarray, new: int, **kwargs: object) -> np.ndarray:
    return np.stack(list(engine.generate(ids, new, **kwargs)), axis=1)


def assert_sampling_rows_draw_alone_and_greedy_rows_stay(engine: Engine, folder: Path) -> None:
    prompts, ids = mixed_batch(folder, LENGTHS)
    together = tokens_of(engine, ids, NEW, prompt_lengths=np.asarray(LENGTHS), sampling=[None, HOT, None])
    for row in (0, 2):
        np.testing.assert_array_equal(together[row], greedy_tokens(engine, prompts[row][None], NEW)[0], f"row {row}")
    alone = tokens_of(engine, prompts[1][None], NEW, sampling=[HOT])[0]
    np.testing.assert_array_equal(together[1], alone)
    assert together[1].tolist() != greedy_tokens(engine, prompts[1][None], NEW)[0].tolist()


def assert_first_draws_follow_the_softmax(engine: Engine, folder: Path, rows: int = 4, rounds: int = 100) -> None:
    """The first token of `rows * rounds` rows, each with its own seed: each of the three likeliest tokens (under
    the engine's own teacher-forced logits) is drawn at its probability, within 4 standard errors."""
    ids = mixed_batch(folder, [12])[0][0]
    probs = np.exp(engine.logits(ids[None])[0, -1].astype(np.float64))
    probs /= probs.sum()
    drawn = []
    for r in range(rounds):
        sampling = [Sampling(temperature=1.0, seed=rows * r + i) for i in range(rows)]
        drawn.extend(next(iter(engine.generate(np.stack([ids] * rows), 1, sampling=sampling))).tolist())
    n = len(drawn)
    for token in np.argsort(-probs)[:3]:
        p = float(probs[token])
        assert abs(drawn.count(int(token)) / n - p) <= 4 * np.sqrt(p * (1 - p) / n), (int(token), p)


def assert_stream_rows_sample_alone(engine: Engine, folder: Path) -> None:
    prompts, _ = mixed_batch(folder, LENGTHS)
    stream = engine.stream()
    got = {0: [stream.join(0, prompts[0])], 1: [stream.join(1, prompts[1], HOT)]}
    for _ in range(3):
        for key, token in stream.step().items():
            got[key].append(token)
    got[2] = [stream.join(2, prompts[2])]  # joins a running batch that holds a sampling row
    for _ in range(NEW - 1):
        for key, token in stream.step().items():
            got[key].append(token)
    for key in (0, 2):
        np.testing.assert_array_equal(got[key][:NEW], greedy_tokens(engine, prompts[key][None], NEW)[0], f"row {key}")
    np.testing.assert_array_equal(got[1][:NEW], tokens_of(engine, prompts[1][None], NEW, sampling=[HOT])[0])


def assert_a_row_draws_its_draws_then_takes_the_argmax(engine: Engine, ids: np.ndarray) -> None:
    """`Sampling.draws`: the row's first tokens are the draws it makes without a limit; after them it continues
    greedily from what it drew."""
    tokens = tokens_of(engine, ids, 6, sampling=[Sampling(temperature=1.5, seed=11, draws=3)])[0]
    np.testing.assert_array_equal(tokens[:3], tokens_of(engine, ids, 3, sampling=[HOT])[0])
    drawn = np.concatenate([ids, tokens[None, :3]], axis=1)
    np.testing.assert_array_equal(tokens[3:], greedy_tokens(engine, drawn, 3)[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "knobs"),
    [("torch", {}), ("ort", {}), ("ort_genai", {}), ("torch_compiled", {"compile_mode": "none"}),
     ("torch_compiled", {"compile_mode": "default", "prefill_bucket": 32})],
    ids=["torch", "ort", "ort_genai", "torch_compiled-eager", "torch_compiled-compiled"],
)
def test_sampling_rows_draw_from_their_own_logits_beside_greedy_rows(name: str, knobs: dict, builtin: Path,
                                                                     cache_dir: Path) -> None:
    """The compiled variant also prefills through its bucket's graph, and must not recompile for the tokens a draw
    puts back on the device."""
    engine = built_engine(name, builtin, cache_dir, RUNTIME, **knobs)
    assert engine.samples
    with torch._dynamo.config.patch(error_on_recompile=name == "torch_compiled"):
        assert_sampling_rows_draw_alone_and_greedy_rows_stay(engine, builtin)
        assert_a_row_draws_its_draws_then_takes_the_argmax(engine, mixed_batch(builtin, [12])[0][0][None])
        assert_first_draws_follow_the_softmax(engine, builtin)
        if engine.continuous:
            assert_stream_rows_sample_alone(engine, builtin)
    engine.close()


@pytest.mark.parametrize("name", ENGINES)
def test_each_engine_class_samples_as_its_info_declares(name: str) -> None:
    assert engine_class(name).samples == engine_info(name).samples


def test_the_same_seed_repeats_a_sampled_continuation_on_torch(tiny_model: Path) -> None:
    engine = engine_class("torch").load(tiny_model, CandidateConfig(engine="torch"), RUNTIME)
    ids = prompt(0, 2, 8)
    first = tokens_of(engine, ids, 6, sampling=[HOT, Sampling(temperature=1.0, seed=12)])
    np.testing.assert_array_equal(first, tokens_of(engine, ids, 6, sampling=[HOT, Sampling(temperature=1.0, seed=12)]))
    assert first[1].tolist() != tokens_of(engine, ids, 6, sampling=[None, Sampling(temperature=1.0, seed=13)])[1].tolist()
    engine.close()
