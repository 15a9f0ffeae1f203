"""The fp32 reference cache: computed once, however many runs ask for it at the same time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers

from autoopt.accuracy.reference import _windows, ensure_reference
from autoopt.config.schema import WorkloadConfig
from autoopt.engines.torch.engine import TorchEngine
from autoopt.models.source import ResolvedModel


class SlowEngine:
    """Stands in for the fp32 torch engine: its load takes long enough for a second caller to arrive."""

    loads = 0

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> SlowEngine:
        cls.loads += 1
        time.sleep(0.5)
        return cls()

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return np.zeros((*ids.shape, 8), np.float32)

    def generate(self, ids: np.ndarray, new_tokens: int) -> Iterator[np.ndarray]:
        for _ in range(new_tokens):
            yield np.zeros(ids.shape[0], np.int64)

    def close(self) -> None:
        pass


class RangeTokenizer:
    @staticmethod
    def from_pretrained(path: Path) -> Any:
        return lambda text: {"input_ids": list(range(1000))}


def test_concurrent_first_runs_compute_the_reference_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TorchEngine, "load", SlowEngine.load)
    monkeypatch.setattr(transformers, "AutoTokenizer", RangeTokenizer)
    (tmp_path / "text.txt").write_text("held-out text")
    workload = WorkloadConfig(name="w", eval_text=str(tmp_path / "text.txt"), eval_windows=2, eval_window_len=16)
    model = ResolvedModel("m", tmp_path, "key")
    paths: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            paths.append(ensure_reference(model, workload, tmp_path / "cache").path)
        except BaseException as e:  # a thread's exception is otherwise lost: the assertion reports it
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and SlowEngine.loads == 1
    assert paths[0] == paths[1] and set(np.load(paths[0]).files) >= {"ids", "logits", "decode_tokens"}


def test_too_short_text_for_the_windows_is_refused_naming_the_keys_and_the_fix() -> None:
    with pytest.raises(ValueError) as err:
        _windows(np.arange(100), 8, 128)

    message = str(err.value)
    assert "workload.eval_windows=8" in message and "workload.eval_window_len=128" in message
    assert "100" in message and "workload.eval_text" in message
