"""One matmul where a decoder layer runs several on the same input: the attention's q/k/v projections become
one `qkv_proj`, the MLP's gate/up projections one `gate_up_proj` (gpt-fast's `wqkv`). A decode step then
launches 3 fewer matmuls per layer, which is what a batch-1 step on a card is bound by (kernel count, not
bytes: see experiments/2026-11-27-h200-compiled-decode.md).

The fused weight is the originals' rows in order, and every quant of this engine scales per output row
(int8 and float8 per channel, int4 per group within a row), so quantizing the fused layer gives exactly the
originals' quantized values. The HF modules keep working, for the teacher-forced `logits` path: each original
projection becomes a `ProjectionSlice` that runs the fused layer and keeps its own columns (3x the qkv work
there, paid by the accuracy pass only), so accuracy is measured through the very matmuls the decode runs.
"""

from __future__ import annotations

import torch
from torch import nn

QKV = ("q_proj", "k_proj", "v_proj")
GATE_UP = ("gate_proj", "up_proj")


class ProjectionSlice(nn.Module):
    """Stands in for one projection folded into `owner.<fused>`: that layer's output, columns [start, stop)."""

    def __init__(self, owner: nn.Module, fused: str, start: int, stop: int):
        super().__init__()
        # Not a submodule: `owner` holds this slice, and the fused layer is looked up at call time because
        # quantization replaces it after fusion.
        self.__dict__["_owner"] = owner
        self.fused, self.start, self.stop = fused, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self._owner, self.fused)(x)[..., self.start : self.stop]


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v into `self_attn.qkv_proj` and gate/up into `mlp.gate_up_proj` in every layer of `model` (an
    HF causal LM whose layers are at `model.model.layers`), in place. Returns how many fused layers it made."""
    fused = 0
    for layer in model.model.layers:
        for owner, names, target in ((layer.self_attn, QKV, "qkv_proj"), (layer.mlp, GATE_UP, "gate_up_proj")):
            parts = [getattr(owner, name) for name in names]
            if not all(type(part) is nn.Linear for part in parts):
                raise TypeError(f"fuse_projections expects plain nn.Linear {', '.join(names)}; got "
                                f"{', '.join(type(p).__name__ for p in parts)} (fuse before quantizing)")
            setattr(owner, target, _concat(parts))
            start = 0
            for name, part in zip(names, parts, strict=True):
                setattr(owner, name, ProjectionSlice(owner, target, start, start + part.out_features))
                start += part.out_features
            fused += 1
    return fused


def _concat(parts: list[nn.Linear]) -> nn.Linear:
    weight = torch.cat([p.weight.detach() for p in parts])
    with_bias = any(p.bias is not None for p in parts)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=with_bias, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if with_bias:
        biases = [p.bias.detach() if p.bias is not None else weight.new_zeros(p.out_features) for p in parts]
        linear.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
    return linear
