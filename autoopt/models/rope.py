"""Moving a cache's keys to other positions, for continuous batching over a graph that positions every cache
column (autoopt's ONNX export has no position input: a token's position is the count of columns before it).

A row's cached keys carry rotary embeddings of the positions they were computed at. When a stream adds padding
columns before a row's context, or cuts columns no row uses, the next token's position moves by as many, so the
cached keys are rotated by the same amount: RoPE's rotations compose, R(p + n) = R(n) R(p), and the row then
attends as a prompt left-padded to the batch's length does (up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Families whose attention caches keys after rotating them by HF's `rotate_half` over the whole head.
ROTATE_HALF = ("Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")


@dataclass(frozen=True)
class Rope:
    inv_freq: np.ndarray  # (head_dim / 2,): each dimension pair's angle per position

    def moved(self, keys: np.ndarray, n: int) -> np.ndarray:
        """`keys` (batch, heads, positions, head_dim) as computed `n` positions later."""
        angles = n * np.concatenate([self.inv_freq, self.inv_freq])
        cos, sin = np.cos(angles).astype(keys.dtype), np.sin(angles).astype(keys.dtype)
        half = keys.shape[-1] // 2
        rotated = np.concatenate([-keys[..., half:], keys[..., :half]], axis=-1)
        return keys * cos + rotated * sin


def rope_of(config: dict[str, Any]) -> Rope | str:
    """The key rotation of the model `config` (its `config.json`) describes, or why none can be applied."""
    try:
        return _rope_of(config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return f"its config.json does not describe the rotary embedding ({type(e).__name__}: {e})"


def _rope_of(config: dict[str, Any]) -> Rope | str:
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in ROTATE_HALF:
        return f"moving cached keys is implemented for {', '.join(ROTATE_HALF)}, not {architecture}"
    params = {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {}),
              **(config.get("rope_parameters") or {})}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        return f"rope_type={kind} (only the default rotary embedding is implemented)"
    if params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) != 1.0:
        return "a partial rotary embedding (only a rotation of the whole head is implemented)"
    # Qwen2 declares a window it does not use (use_sliding_window false); Mistral has no such switch
    if config.get("use_sliding_window", config.get("sliding_window") is not None):
        return "sliding-window attention"
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    # in float32, as transformers computes the frequencies the exported graph holds
    inv_freq = np.float32(1.0) / np.float32(params["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    return Rope(inv_freq.astype(np.float64))
