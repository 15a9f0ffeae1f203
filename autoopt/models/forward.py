"""How to call a transformers causal LM's forward across the versions autoopt accepts (transformers>=5.2,<6)."""

from __future__ import annotations

import inspect
from typing import Any


def cache_keyword(model: Any) -> str:
    """The keyword `model.forward` takes its KV cache by: `cache` from transformers 5.2x on (which still maps
    `past_key_values` to it, with a deprecation warning, until 5.40), `past_key_values` before. The wrong one
    is not an error: the forward's **kwargs swallow it, and every decode step then runs without its past
    (transformers 5.17 on a GPU machine did exactly that)."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`; cannot decode with a KV cache")
