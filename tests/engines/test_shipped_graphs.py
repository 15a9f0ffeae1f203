"""A torch_compiled bundle ships the graphs its load compiles: a fresh process on a like machine, over an empty
inductor cache, reads them instead of compiling (and says so), decodes the same tokens, and leaves the bundle's
files as they were; shipped files that do not hash as the manifest lists are not used."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoopt.bundle.manifest import hash_tree
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch_compiled import INDUCTOR_CACHE_ENV
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, load_settings, runtime_settings
from autoopt.engines.torch_compiled.shipped import SHIPPED_DIR, install_shipped_graphs
from tests.engines.decoding import prompt

REPO = Path(__file__).resolve().parents[2]
RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=2)


def test_the_runtime_json_gives_back_the_candidate_and_runtime_it_was_written_from(tmp_path: Path) -> None:
    candidate = CandidateConfig(engine="torch_compiled", quant="int4", quant_block_size=64, compile_mode="default",
                                prefill_bucket=32, attn_backend="math")
    TorchCompiledEngine.write_runtime_config(tmp_path, candidate, RUNTIME)

    read_candidate, read_runtime = load_settings(tmp_path)

    assert runtime_settings(read_candidate, read_runtime) == runtime_settings(candidate, RUNTIME)


def test_a_runtime_json_from_before_compile_tuning_and_attn_backend_loads_with_their_defaults(tmp_path: Path) -> None:
    TorchCompiledEngine.write_runtime_config(tmp_path, CandidateConfig(engine="torch_compiled"), RUNTIME)
    path = tmp_path / "torch_compiled_runtime.json"
    written = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in written.items() if k not in ("compile_tuning", "attn_backend")}))

    candidate, _ = load_settings(tmp_path)

    assert (candidate.compile_tuning, candidate.attn_backend) == ("none", "auto")


def _shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    folder, cache = tmp_path / "model", tmp_path / "cache"
    (folder / SHIPPED_DIR / "fxgraph" / "ab").mkdir(parents=True)
    (folder / SHIPPED_DIR / "fxgraph" / "ab" / "entry").write_bytes(b"graph")
    (folder / SHIPPED_DIR / "kernel.so").write_bytes(b"kernel")
    (cache / "fxgraph" / "ab").mkdir(parents=True)
    (cache / "fxgraph" / "ab" / "other").write_bytes(b"kept")
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(cache))
    return folder, cache


def test_shipped_files_are_copied_into_the_cache_in_use_once_and_the_bundle_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, cache = _shipped(tmp_path, monkeypatch)
    recorded = hash_tree(folder)

    assert install_shipped_graphs(folder, recorded) == 2
    assert install_shipped_graphs(folder, recorded) == 0  # already there
    assert (cache / "fxgraph" / "ab" / "entry").read_bytes() == b"graph"
    assert (cache / "kernel.so").read_bytes() == b"kernel"
    assert (cache / "fxgraph" / "ab" / "other").read_bytes() == b"kept"
    assert not list(cache.rglob("*.partial"))
    assert hash_tree(folder) == recorded
    assert install_shipped_graphs(tmp_path / "nothing shipped", {}) == 0


@pytest.mark.parametrize("change", ["edited", "unlisted", "missing"])
def test_shipped_files_that_do_not_hash_as_the_manifest_lists_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    folder, cache = _shipped(tmp_path, monkeypatch)
    recorded = hash_tree(folder)
    if change == "edited":
        (folder / SHIPPED_DIR / "kernel.so").write_bytes(b"other code")
    elif change == "unlisted":
        (folder / SHIPPED_DIR / "extra.so").write_bytes(b"more code")
    else:
        (folder / SHIPPED_DIR / "kernel.so").unlink()

    with caplog.at_level(logging.WARNING, logger="autoopt.engines"):
        assert install_shipped_graphs(folder, recorded) == 0

    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["other"]
    assert "do not match its manifest" in caplog.text


def test_an_uncompiled_step_ships_nothing(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    TorchCompiledEngine.write_runtime_config(folder, CandidateConfig(engine="torch_compiled", compile_mode="none"),
                                             RUNTIME)

    TorchCompiledEngine.write_compiled_graphs(folder)

    assert not (folder / SHIPPED_DIR).exists()


_LOAD_BUNDLE = """
import json, sys
from pathlib import Path
import numpy as np
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, load_settings
folder = Path(sys.argv[1])
shipped = TorchCompiledEngine.read_compiled_graphs(folder, json.loads(sys.argv[3]))
engine = TorchCompiledEngine.load(folder, *load_settings(folder))
tokens = [int(step[0]) for step in engine.generate(np.array(json.loads(sys.argv[2]), dtype=np.int64), 10)]
print(json.dumps({"shipped": shipped, "cache": engine.compile_cache, "warm": engine.compile_cache_warm(),
                  "tokens": tokens}))
"""


@pytest.mark.slow
def test_a_fresh_process_over_an_empty_cache_reads_the_shipped_graphs_instead_of_compiling(
    tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    candidate = CandidateConfig(engine="torch_compiled", quant="int8_weight", compile_mode="default")
    TorchCompiledEngine.write_runtime_config(folder, candidate, RUNTIME)
    TorchCompiledEngine.write_compiled_graphs(folder)
    shipped = hash_tree(folder)
    ids = prompt(3, 1, 12)

    def load_over(cache: Path, where: Path) -> dict:
        env = {**os.environ, INDUCTOR_CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-c", _LOAD_BUNDLE, str(where), json.dumps(ids.tolist()), json.dumps(hash_tree(where))]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    unshipped = tmp_path / "unshipped"
    shutil.copytree(folder, unshipped, ignore=shutil.ignore_patterns(SHIPPED_DIR))
    with_graphs = load_over(tmp_path / "empty1", folder)
    without = load_over(tmp_path / "empty2", unshipped)

    assert with_graphs["shipped"] > 0 and with_graphs["warm"] is True
    assert with_graphs["cache"]["hits"] >= 1 and with_graphs["cache"]["misses"] == 0
    assert without["shipped"] == 0 and without["warm"] is False and without["cache"]["misses"] >= 1
    assert with_graphs["tokens"] == without["tokens"]
    assert hash_tree(folder) == shipped
