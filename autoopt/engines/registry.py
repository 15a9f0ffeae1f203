"""Engines by name: `autoopt.engines.<name>` holds each one's `INFO`. Importing this module imports no
runtime. The names are the `engine` knob's choices (`autoopt.config.knobs.ENGINES`)."""

from __future__ import annotations

import importlib

from autoopt.config.knobs import ENGINES
from autoopt.engines.base import Engine
from autoopt.engines.info import EngineInfo


def engine_info(name: str) -> EngineInfo:
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return importlib.import_module(f"autoopt.engines.{name}").INFO


def engine_class(name: str) -> type[Engine]:
    module, _, cls = engine_info(name).engine_class.partition(":")
    return getattr(importlib.import_module(module), cls)
