from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Qwen2 folder with a tokenizer: for contracts, not for accuracy numbers."""
    from autoopt.models import tiny_random_model

    return tiny_random_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The shared content-addressed cache, so the trained default model is trained once per machine."""
    return Path(os.environ.get("AUTOOPT_CACHE", Path.home() / ".cache" / "autoopt"))
