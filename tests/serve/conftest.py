"""The tiny untrained model on the torch engine, served on loopback (contracts, not quality): each module that asks
gets its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from autoopt.config.schema import CandidateConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.serve.app import ServedModel, create_app
from autoopt.serve.server import ServerThread
from tests.serve.helpers import MAX_LENGTH


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> ServedModel:
    runtime = RuntimeOptions(device="cpu", threads=1, batch_size=1, max_length=MAX_LENGTH, max_batch=4)
    engine = engine_class("torch").load(tiny_model, CandidateConfig(engine="torch"), runtime)
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    return ServedModel(engine, tokenizer, "tiny", MAX_LENGTH)


@pytest.fixture(scope="module")
def server(served: ServedModel) -> Iterator[ServerThread]:
    with ServerThread(create_app(served, ServingConfig(max_batch=4, max_queue_delay_ms=5.0))) as running:
        yield running
