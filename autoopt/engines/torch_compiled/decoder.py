"""The fixed-shape step of the torch_compiled engine: the HF model's layers over a preallocated KV cache."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel


class StaticDecoder(nn.Module):
    """The HF model's layers over KV buffers for one batch size (registered buffers, so that CUDA graphs treat
    them as static). `forward(ids, positions, last)` writes the keys/values of `ids` (batch, T) at `positions`
    (T,) into the cache, attends to every slot at or before each position from the row's `starts` on (the
    first slot of its prompt; 0 unless its prompt was left-padded), and returns the greedy next token
    (batch,) after the row `last` (1,) of `ids`, and that row's logits (batch, vocab), which only rows that sample
    read. Weights are shared with the HF model, not copied; its projections must be fused first
    (`fuse_projections`).

    `backends` are the only SDPA kernels the step may use (None: SDPA picks); `repeat_kv` repeats the KV heads
    to one per query head before SDPA, for kernels that take no `enable_gqa`."""

    def __init__(
        self, model: nn.Module, batch: int, capacity: int, cos: torch.Tensor, sin: torch.Tensor,
        backends: list[Any] | None = None, repeat_kv: bool = False,
    ):
        super().__init__()
        inner, config = model.model, model.config
        self.embed, self.layers, self.norm, self.lm_head = inner.embed_tokens, inner.layers, inner.norm, model.lm_head
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = cos.shape[-1]
        self.qkv_sizes = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        self.backends = backends
        self.repeat = self.heads // self.kv_heads if repeat_kv else 1
        dtype, device = cos.dtype, cos.device
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("slots", torch.arange(capacity, device=device))
        # Per row, the first slot its prompt fills: rows of a batch with shorter prompts are left-padded to the
        # longest, and attend from there on. The engine sets them before each request's prefill.
        self.register_buffer("starts", torch.zeros(batch, dtype=torch.long, device=device))
        for i in range(len(self.layers)):
            shape = (batch, self.kv_heads, capacity, self.head_dim)
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device))
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device))

    def caches(self) -> list[torch.Tensor]:
        """Every layer's key and value buffer, (batch, kv_heads, capacity, head_dim) each."""
        return [getattr(self, f"{kind}{i}") for i in range(len(self.layers)) for kind in ("k", "v")]

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backends is None:
            return self._step(ids, positions, last)
        with sdpa_kernel(self.backends):  # inside the compiled region: dynamo traces the restriction
            return self._step(ids, positions, last)

    def _step(self, ids: torch.Tensor, positions: torch.Tensor,
              last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = ids.shape
        x = self.embed(ids)
        # Rotary angles at each row's own position, counted from its first prompt slot: (batch, 1, T, D).
        rotary = (positions[None, :] - self.starts[:, None]).clamp(min=0)
        cos, sin = self.cos[rotary][:, None], self.sin[rotary][:, None]
        slots, at = self.slots[None, None, :], positions[None, :, None]
        # (batch, 1, T, capacity), True = attend: the row's prompt up to the position, and a padding position
        # itself (a query that attends to nothing gives NaN, which masked weights of 0 would still carry along).
        mask = (((slots >= self.starts[:, None, None]) & (slots <= at)) | (slots == at))[:, None]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q, k, v = attn.qkv_proj(h).split(self.qkv_sizes, dim=-1)
            q = q.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k_cache, v_cache = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            k_cache.index_copy_(2, positions, k)
            v_cache.index_copy_(2, positions, v)
            if self.repeat > 1:
                k_cache, v_cache = k_cache.repeat_interleave(self.repeat, 1), v_cache.repeat_interleave(self.repeat, 1)
            o = F.scaled_dot_product_attention(
                q, k_cache, v_cache, attn_mask=mask, scale=attn.scaling,
                enable_gqa=k_cache.shape[1] != self.heads,
            )
            x = x + attn.o_proj(o.transpose(1, 2).reshape(batch, length, -1))
            mlp = layer.mlp
            gate, up = mlp.gate_up_proj(layer.post_attention_layernorm(x)).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        logits = self.lm_head(self.norm(x.index_select(1, last)))[:, 0]
        return logits.argmax(dim=-1), logits


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def check_architecture(config: Any) -> None:
    windowed = getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if windowed or any(t != "full_attention" for t in layer_types):
        raise ValueError(
            "engine torch_compiled attends to the whole static cache; this model uses sliding-window layers "
            f"(layer_types={layer_types}); use engine=torch"
        )
