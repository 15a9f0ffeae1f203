"""Moving cached keys to other positions (continuous batching on ort): the rotation is RoPE's, so moving keys
computed at position p by n gives the keys computed at p + n, and a model it cannot move is named with why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding, apply_rotary_pos_emb

from autoopt.models.rope import Rope, rope_of

QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
         "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}


def _keys_at(positions: list[int], keys: torch.Tensor) -> np.ndarray:
    """transformers' own rotary embedding of `keys` (1, heads, len, head_dim) at `positions`."""
    config = Qwen2Config(hidden_size=64, num_attention_heads=4, rope_parameters={"rope_theta": 1e6, "rope_type": "default"})
    cos, sin = Qwen2RotaryEmbedding(config)(keys, torch.tensor([positions]))
    _, rotated = apply_rotary_pos_emb(keys, keys, cos, sin)
    return rotated.numpy()


@pytest.mark.parametrize("n", [5, -3, 40])
def test_keys_moved_by_n_are_the_keys_computed_n_positions_later(n: int) -> None:
    rope = rope_of(QWEN2)
    assert isinstance(rope, Rope)
    keys = torch.randn(1, 2, 6, 16, generator=torch.Generator().manual_seed(0))
    positions = list(range(10, 16))

    moved = rope.moved(_keys_at(positions, keys), n)

    np.testing.assert_allclose(moved, _keys_at([p + n for p in positions], keys), atol=2e-5)
    np.testing.assert_allclose(rope.moved(moved, -n), _keys_at(positions, keys), atol=2e-5)
    assert not rope.moved(np.zeros((1, 2, 3, 16), dtype=np.float32), n).any()  # padding stays zero


def test_legacy_config_keys_give_the_same_rotation() -> None:
    legacy = {**{k: v for k, v in QWEN2.items() if k != "rope_parameters"}, "rope_theta": 1e6}
    np.testing.assert_array_equal(rope_of(legacy).inv_freq, rope_of(QWEN2).inv_freq)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"architectures": ["GPTNeoXForCausalLM"]}, "not GPTNeoXForCausalLM"),
        ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}}, "rope_type=yarn"),
        ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default", "partial_rotary_factor": 0.5}},
         "a partial rotary embedding"),
        ({"use_sliding_window": True}, "sliding-window attention"),
        ({"architectures": ["MistralForCausalLM"], "sliding_window": 4096}, "sliding-window attention"),
        ({"hidden_size": None}, "its config.json does not describe the rotary embedding (TypeError"),
    ],
)
def test_a_model_whose_keys_cannot_be_moved_is_named_with_the_reason(change: dict, reason: str) -> None:
    problem = rope_of({**QWEN2, **change})
    assert isinstance(problem, str) and reason in problem


def test_a_declared_but_unused_window_and_a_theta_outside_rope_parameters_still_give_the_rotation() -> None:
    qwen25 = {**QWEN2, "sliding_window": 131072, "use_sliding_window": False}  # as Qwen2.5's config.json
    no_theta = {**QWEN2, "rope_parameters": {"rope_type": "default"}, "rope_theta": 1e6}
    for config in (qwen25, no_theta):
        np.testing.assert_array_equal(rope_of(config).inv_freq, rope_of(QWEN2).inv_freq)
