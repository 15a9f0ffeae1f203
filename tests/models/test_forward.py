"""The KV-cache keyword of a transformers forward, and decoding that really uses the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.models.forward import cache_keyword


class _Before:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        ...


class _Neither:
    def forward(self, input_ids=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        ...


def test_the_keyword_follows_the_forward_signature(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert cache_keyword(model) in ("cache", "past_key_values")
    assert cache_keyword(model) in __import__("inspect").signature(model.forward).parameters
    assert cache_keyword(_Before()) == "past_key_values"
    with pytest.raises(TypeError, match="neither `cache` nor `past_key_values`"):
        cache_keyword(_Neither())


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_eager_torch_decodes_what_recomputing_the_whole_sequence_gives(tiny_model: Path, kv_cache: str) -> None:
    """A cache the forward silently ignored would decode each token from the previous one alone."""
    from transformers import AutoModelForCausalLM

    prompt = np.array([[5, 17, 42, 7, 99, 3, 11, 64]], dtype=np.int64)
    runtime = RuntimeOptions(device="cpu", threads=1, max_length=32, max_batch=1)
    engine = engine_class("torch").load(tiny_model, CandidateConfig(kv_cache=kv_cache), runtime)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.from_numpy(prompt)
    with torch.inference_mode():
        for _ in range(10):
            ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)

    got = np.stack(list(engine.generate(prompt, 10)), 1)

    np.testing.assert_array_equal(got, ids[:, prompt.shape[1]:].numpy())
