"""Engines by name. Importing this module imports no runtime."""

from __future__ import annotations

import importlib

from autoopt.engines.base import Engine
from autoopt.engines.info import EngineInfo

_MODULES = {
    "torch": "autoopt.engines.torch",
    "ort": "autoopt.engines.ort",
    "ort_genai": "autoopt.engines.ort_genai",
    "tensorrt": "autoopt.engines.tensorrt",
}

ENGINE_NAMES: tuple[str, ...] = tuple(_MODULES)


def engine_info(name: str) -> EngineInfo:
    if name not in _MODULES:
        raise KeyError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
    return importlib.import_module(_MODULES[name]).INFO


def engine_class(name: str) -> type[Engine]:
    module, _, cls = engine_info(name).engine_class.partition(":")
    return getattr(importlib.import_module(module), cls)
