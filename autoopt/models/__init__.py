"""The built-in default model: a small Qwen2 LM trained locally on text that ships with Python."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from autoopt.models.corpus import Corpus, load_corpus

if TYPE_CHECKING:
    from autoopt.models.builtin import BuiltinModelSpec, ensure_builtin_model, tiny_random_model

__all__ = ["BuiltinModelSpec", "Corpus", "ensure_builtin_model", "load_corpus", "tiny_random_model"]

_FROM_BUILTIN = frozenset({"BuiltinModelSpec", "ensure_builtin_model", "tiny_random_model"})


def __getattr__(name: str) -> object:
    # Deferred so that importing a sibling (autoopt.models.source) or the corpus does not load torch.
    if name in _FROM_BUILTIN:
        return getattr(importlib.import_module("autoopt.models.builtin"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
