"""Projection fusion in the torch_compiled engine: the HF forward of a fused model gives the unfused model's
logits, and quantizing a fused layer gives exactly the quantized rows of the layers it fused (every quant
scales per output row), so fusing changes the kernels a decode step launches, not the model it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from autoopt.engines.torch_compiled.fuse import ProjectionSlice, fuse_projections
from autoopt.engines.torch_compiled.quant import Float8Linear, Int4WeightLinear, Int8WeightLinear, quantize_weights

CPU = torch.device("cpu")


def _load(folder: Path) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_fused_model_gives_the_unfused_logits(tiny_model: Path) -> None:
    plain, fused = _load(tiny_model), _load(tiny_model)
    layers = len(plain.model.layers)

    assert fuse_projections(fused) == 2 * layers
    attn, mlp = fused.model.layers[0].self_attn, fused.model.layers[0].mlp
    assert isinstance(attn.q_proj, ProjectionSlice) and isinstance(mlp.up_proj, ProjectionSlice)
    assert attn.qkv_proj.out_features == sum(getattr(plain.model.layers[0].self_attn, n).out_features
                                             for n in ("q_proj", "k_proj", "v_proj"))
    # The fused layers are the model's only projections: no weight is held twice.
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in plain.parameters())
    ids = torch.randint(1, 500, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(fused(ids).logits, plain(ids).logits, atol=1e-5, rtol=1e-5)


# Buffers laid out by output row, with the dimension rows run along (int4's packed weight is tiled, so for it
# the layer's output stands in for the weight).
@pytest.mark.parametrize(
    ("quant", "cls", "buffers"),
    [("int8_weight", Int8WeightLinear, {"weight": 0, "scales": 0}),
     ("int4", Int4WeightLinear, {"scales_zeros": 1}),
     ("fp8", Float8Linear, {"weight": 0, "scale": 1})],
)
def test_quantizing_a_fused_layer_gives_the_rows_of_its_parts_quantized(
    tiny_model: Path, quant: str, cls: type, buffers: dict[str, int]
) -> None:
    plain, fused = _load(tiny_model), _load(tiny_model)
    fuse_projections(fused)
    group = 32 if quant == "int4" else None
    quantize_weights(plain, quant, group, torch.bfloat16, CPU)
    quantize_weights(fused, quant, group, torch.bfloat16, CPU)

    x = torch.randn(3, fused.config.hidden_size, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    for i, layer in enumerate(fused.model.layers):
        for owner, names, target in ((layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_proj"),
                                     (layer.mlp, ("gate_proj", "up_proj"), "gate_up_proj")):
            whole = getattr(owner, target)
            assert isinstance(whole, cls)
            parts = [getattr(plain.model.layers[i].self_attn if target == "qkv_proj" else plain.model.layers[i].mlp,
                             n) for n in names]
            for buffer, dim in buffers.items():
                joined = torch.cat([getattr(p, buffer) for p in parts], dim=dim)
                assert torch.equal(getattr(whole, buffer).view(torch.uint8), joined.view(torch.uint8)), (
                    f"layer {i} {target}.{buffer}"
                )
            with torch.inference_mode():
                torch.testing.assert_close(whole(x), torch.cat([p(x) for p in parts], dim=-1), atol=0, rtol=0)


def test_fusion_refuses_layers_already_quantized(tiny_model: Path) -> None:
    model = _load(tiny_model)
    quantize_weights(model, "int8_weight", None, torch.bfloat16, CPU)

    with pytest.raises(TypeError, match="fuse before quantizing"):
        fuse_projections(model)
