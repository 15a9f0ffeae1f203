"""Export an HF causal LM folder to one ONNX decoder-with-past graph that serves prefill and decode.

Graph contract (what `OrtEngine` feeds): inputs `input_ids` int64 (batch, seq), `attention_mask`
int64 (batch, past + seq) and `past_key_values.{i}.key|value` (batch, kv_heads, past, head_dim);
outputs `logits` (batch, seq, vocab) and `present.{i}.key|value` (batch, kv_heads, past + seq,
head_dim). Prefill passes past tensors of length 0. Position ids follow from the cache length, so a
left-padded row's positions are offset by its padding (masked out by `attention_mask`): rotary attention
depends on distances between positions only, so the offset moves rounding, not the arithmetic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.export import Dim
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedConfig

from autoopt.artifacts import kv_names
from autoopt.models.forward import cache_keyword
from autoopt.passes.onnx_files import MODEL_FILE, copy_side_files

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class DecoderWithPast(torch.nn.Module):
    """Flat past tensors in, flat present tensors out: the layout ONNX inputs and outputs need."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.keyword = cache_keyword(model)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache([(past[i], past[i + 1]) for i in range(0, len(past), 2)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{self.keyword: cache})
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def run_onnx_export(src: Path, dst: Path, device: str = "cpu", dtype: str = "fp32") -> None:
    """Export `src` traced on `device` ("cpu" | "cuda") with weights in `dtype` ("fp32" | "fp16").

    The fp16 graph keeps HF's numerics: RMSNorm runs in fp32 between Cast nodes.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"onnx_export dtype={dtype!r} is not supported; choose one of: {', '.join(_DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "onnx_export on device cuda needs a CUDA build of torch and a CUDA device; none found"
        )

    model = AutoModelForCausalLM.from_pretrained(src, dtype=_DTYPES[dtype]).to(device).eval()
    layers = model.config.num_hidden_layers
    args, dynamic_shapes = _sample_inputs(model.config, _DTYPES[dtype], torch.device(device))
    with torch.no_grad(), warnings.catch_warnings():
        # the same Dim on several inputs (batch, past) makes the exporter warn once per input
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        program = torch.onnx.export(
            DecoderWithPast(model).eval(),
            args,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=["input_ids", "attention_mask", *kv_names(layers, "past_key_values")],
            output_names=["logits", *kv_names(layers, "present")],
            optimize=True,
        )
    program.save(dst / MODEL_FILE)  # switches to external data by itself above 2 GB
    copy_side_files(src, dst)


def _sample_inputs(
    config: PreTrainedConfig, dtype: torch.dtype, device: torch.device
) -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
    """Example inputs with every length > 1, so that no dynamic dimension gets specialized."""
    batch, seq, past_len = 2, 5, 3
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads  # no GQA: one per head
    kv_shape = (batch, kv_heads, past_len, head_dim)
    past = tuple(
        torch.randn(kv_shape, dtype=dtype, device=device) for _ in range(2 * config.num_hidden_layers)
    )
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    attention_mask = torch.ones(batch, past_len + seq, dtype=torch.int64, device=device)

    b, s, p, total = Dim("batch"), Dim("seq"), Dim("past", min=0), Dim("total")
    dynamic_shapes = {
        "input_ids": {0: b, 1: s},
        "attention_mask": {0: b, 1: total},
        "past": tuple({0: b, 2: p} for _ in past),  # the entry for a *args parameter must be a tuple
    }
    return (input_ids, attention_mask, *past), dynamic_shapes
