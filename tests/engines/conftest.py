from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.schema import ModelConfig
from autoopt.models.source import resolve_model


@pytest.fixture(scope="module")
def builtin(cache_dir: Path) -> Path:
    """The trained built-in model's folder (trained once into the cache)."""
    return resolve_model(ModelConfig(), cache_dir).path
