"""Weight-only int8/int4 and float8 linears of the torch_compiled engine, in core torch kernels only.

int8: symmetric, one scale per output channel (CPU `aten._weight_int8pack_mm`; cuda: the weight cast to the
activations' dtype inside the compiled step, see `engine.compile_options` and `engine.cuda_int8_note`). int4:
asymmetric per group of input channels (CPU `aten._weight_int4pack_mm_for_cpu`; cuda tinygemm
`aten._weight_int4pack_mm`). fp8: e4m3 weights and per-token activations through `torch._scaled_mm`. Every scheme
scales per output row, which is what lets `fuse.py` fuse projections before quantizing.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("autoopt.engines")


class Int8WeightLinear(nn.Module):
    """`nn.Linear` with int8 weights, one float scale per output channel (symmetric, round to nearest)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:  # gpt-fast's form; fast only under coordinate-descent tuning (engine.cuda_int8_note)
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales
        else:
            flat = x.reshape(-1, self.in_features)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int4WeightLinear(nn.Module):
    """`nn.Linear` with 4-bit weights, asymmetric per group of `group` input channels, in the packed layout
    of the int4 matmul kernels: w = (q - 8) * scale + zero, scales and zeros stored as (K/group, N, 2)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, group: int, device: torch.device):
        super().__init__()
        weight = linear.weight.detach().float()
        n, k = weight.shape
        grouped = weight.reshape(n, k // group, group)
        low, high = grouped.amin(-1, keepdim=True), grouped.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-8)
        q = torch.round((grouped - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + 8 * scale
        scales_zeros = torch.stack([scale.reshape(n, -1), zero.reshape(n, -1)], dim=-1).transpose(0, 1).contiguous()
        self.out_features, self.in_features, self.group = n, k, group
        self.register_buffer("weight", _pack_int4(q, device))
        self.register_buffer("scales_zeros", scales_zeros.to(device=device, dtype=dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.is_cuda:
            y = torch.ops.aten._weight_int4pack_mm(flat, self.weight, self.group, self.scales_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group, self.scales_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448: e4m3 has no infinities, so every value must be scaled into range


def to_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D `x` as float8 e4m3 with one float32 scale per row (symmetric: x ~ q * scale), scales shaped (rows, 1).
    A row of zeros gets a tiny scale rather than a division by zero."""
    rows = x.float()
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (rows / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Float8Linear(nn.Module):
    """`nn.Linear` in float8 e4m3: weights with one scale per output channel (at load), activations with one
    scale per token (at every call), multiplied by `torch._scaled_mm` with those row-wise scales into the
    activations' dtype. The weight is stored (N, K) row-major, so its transpose is the column-major operand the
    kernel takes."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        weight, scale = to_fp8_rows(linear.weight.detach())
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.reshape(1, -1).contiguous())  # (1, N) float32, as scale_b
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = to_fp8_rows(x.reshape(-1, self.in_features))
        y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.scale, out_dtype=x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def _fp8_fits(linear: nn.Linear) -> bool:
    n, k = linear.weight.shape
    return k % 16 == 0 and n % 16 == 0  # _scaled_mm's alignment on cuda


def _pack_int4(q: torch.Tensor, device: torch.device) -> torch.Tensor:
    """int32 (N, K) values 0..15 -> the kernel's packed tensor on `device`."""
    if device.type == "cuda":
        k = q.shape[1]
        inner_k_tiles = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
        pairs = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).to(device)
        return torch.ops.aten._convert_weight_to_int4pack(pairs, inner_k_tiles)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)


def _int4_fits(linear: nn.Linear, group: int, device: torch.device) -> bool:
    n, k = linear.weight.shape
    if device.type == "cuda":
        return k % group == 0 and k % 32 == 0 and n % 8 == 0
    return k % group == 0


def quantize_weights(model: nn.Module, quant: str, group: int | None, dtype: torch.dtype, device: torch.device) -> int:
    """Replace every `nn.Linear` of `model` in place (int8_weight: all int8; int4: int4, `lm_head` and layers
    whose shape the int4 kernel cannot take int8; fp8: all float8, but layers whose shape `_scaled_mm` cannot
    take, which stay in `dtype`). Returns how many layers were replaced."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if quant == "fp8":
            if not _fp8_fits(module):
                log.warning("torch_compiled: %s %s is not a multiple of 16; kept %s", name,
                            tuple(module.weight.shape), dtype)
                continue
            new: nn.Module = Float8Linear(module, dtype).to(device)
        elif quant == "int4" and attr != "lm_head" and group is not None and _int4_fits(module, group, device):
            new = Int4WeightLinear(module, dtype, group, device)
        else:
            if quant == "int4" and attr != "lm_head":
                log.warning("torch_compiled: %s %s does not fit int4 group %s; kept int8", name,
                            tuple(module.weight.shape), group)
            new = Int8WeightLinear(module, dtype).to(device)
        setattr(parent, attr, new)
        replaced += 1
    return replaced
