"""The fp32 reference cache: computed once, however many runs ask for it at the same time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoopt.accuracy import reference
from autoopt.accuracy.reference import _windows, ensure_reference
from autoopt.config.schema import WorkloadConfig
from autoopt.engines.torch.engine import TorchEngine
from autoopt.models.source import ResolvedModel


def slow_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """TorchEngine.load counted and slowed, so that a second caller arrives while the first computes."""
    loads: list[int] = []
    real = TorchEngine.load.__func__  # type: ignore[attr-defined]

    def load(cls: type[TorchEngine], *args: Any, **kwargs: Any) -> TorchEngine:
        loads.append(1)
        time.sleep(0.5)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(TorchEngine, "load", classmethod(load))
    return loads


def test_concurrent_first_runs_compute_the_reference_once(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = slow_loads(monkeypatch)
    # The key's code digest reads the autoopt sources from disk at the first call, in each thread (it is cached only
    # once computed): a source file saved meanwhile (another edit to the tree while the suite runs) gave the threads
    # different keys, hence two loads, or a SyntaxError where the file was mid-edit. This test is about the lock.
    monkeypatch.setattr(reference, "source_digest", lambda module: "code")
    workload = WorkloadConfig(name="w", eval_windows=2, eval_window_len=16)
    model = ResolvedModel("m", tiny_model, "key")
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

    assert errors == [] and len(loads) == 1
    assert paths[0] == paths[1] and set(np.load(paths[0]).files) >= {"ids", "logits", "decode_tokens"}


def test_too_short_text_for_the_windows_is_refused_naming_the_keys_and_the_fix() -> None:
    with pytest.raises(ValueError) as err:
        _windows(np.arange(100), 8, 128)

    message = str(err.value)
    assert "workload.eval_windows=8" in message and "workload.eval_window_len=128" in message
    assert "100" in message and "workload.eval_text" in message
