"""The build cache: a hit never rebuilds, concurrent builders of one entry build it once, an incomplete
entry is rebuilt."""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest

from autoopt import digest
from autoopt.passes import pipeline, registry
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.registry import PassInfo, PassStep


@pytest.fixture(autouse=True)
def counting_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PASSES, "counting", PassInfo("tests.passes.counting_pass", ()))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_second_build_is_a_cache_hit_with_the_first_ones_artifact(model: Path, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    steps = [PassStep("counting", {"tag": "a", "counter": str(counter)})]

    first = run_pipeline(model, "m", steps, tmp_path / "cache")
    second = run_pipeline(model, "m", steps, tmp_path / "cache")

    assert _runs(counter) == 1
    assert not first.cached and second.cached and second.seconds == 0.0
    assert (first.artifact, first.key, first.sha256) == (second.artifact, second.key, second.sha256)


def test_steps_that_share_a_prefix_share_its_output(model: Path, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    base = PassStep("counting", {"tag": "export", "counter": str(counter)})

    a = run_pipeline(model, "m", [base, PassStep("counting", {"tag": "a", "counter": str(counter)})], tmp_path / "c")
    b = run_pipeline(model, "m", [base, PassStep("counting", {"tag": "b", "counter": str(counter)})], tmp_path / "c")

    assert _runs(counter) == 3  # export once, then a and b
    assert a.key != b.key and (Path(b.artifact) / "steps.txt").read_text() == "counting export\ncounting b\n"


def test_concurrent_builders_of_one_entry_build_it_once(model: Path, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    steps = [PassStep("counting", {"tag": "slow", "delay_s": 0.5, "counter": str(counter)})]
    results = []

    threads = [threading.Thread(target=lambda: results.append(run_pipeline(model, "m", steps, tmp_path / "c")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert _runs(counter) == 1
    assert sorted(r.cached for r in results) == [False, True, True]
    assert len({r.artifact for r in results}) == 1


def test_an_incomplete_entry_is_rebuilt(model: Path, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    steps = [PassStep("counting", {"tag": "a", "counter": str(counter)})]
    built = run_pipeline(model, "m", steps, tmp_path / "cache")
    meta = Path(built.artifact) / "autoopt_build.json"
    meta.write_text("{not json")

    again = run_pipeline(model, "m", steps, tmp_path / "cache")

    assert _runs(counter) == 2 and not again.cached
    assert "seconds" in json.loads(meta.read_text())


def test_a_failed_build_leaves_nothing_in_the_cache(model: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="asked to fail"):
        run_pipeline(model, "m", [PassStep("counting", {"fail": True})], tmp_path / "cache")

    assert [p.name for p in (tmp_path / "cache" / "builds").iterdir() if not p.name.endswith(".lock")] == []


def _install_fake_distribution(site: Path, distribution: str, module: str, version: str) -> None:
    """A distribution named `distribution` that provides the import package `module` (as onnxruntime-gpu provides
    onnxruntime, and onnxruntime-genai-cuda onnxruntime_genai)."""
    shutil.rmtree(site, ignore_errors=True)
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text("")
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")


def test_a_library_installed_under_another_distribution_name_keys_the_build_by_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(registry.PASSES, "uses_fakert", PassInfo("tests.passes.counting_pass", ("fakert",)))
    step = PassStep("uses_fakert", {"tag": "a"})
    keys = []
    for version in ("1.0", "2.0"):
        _install_fake_distribution(site, "fakert-gpu", "fakert", version)
        pipeline.distributions_by_module.cache_clear()
        keys.append(pipeline.step_key("m", step))
    pipeline.distributions_by_module.cache_clear()

    assert keys[0] != keys[1]


@pytest.mark.parametrize("relative", [False, True], ids=["absolute_import", "relative_import"])
def test_a_change_to_the_pass_code_or_what_it_imports_builds_anew(
    relative: bool, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "edited_" + re.sub(r"\W", "_", tmp_path.name)  # a package of its own: its modules stay imported
    package = tmp_path / "code" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("LINE = 'one'\n")
    (package / "step.py").write_text(
        f"from {'.' if relative else name + '.'}helper import LINE\n\n"
        "def run_edited(src, dst):\n"
        "    (dst / 'steps.txt').write_text(LINE)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.setitem(registry.PASSES, "edited", PassInfo(f"{name}.step", ()))
    steps = [PassStep("edited")]

    first = run_pipeline(model, "m", steps, tmp_path / "cache")
    again = run_pipeline(model, "m", steps, tmp_path / "cache")
    (package / "helper.py").write_text("LINE = 'two'\n")
    digest.source_digest.cache_clear()  # the code is read once per process; a new run reads it anew
    del sys.modules[f"{name}.step"], sys.modules[f"{name}.helper"]
    edited = run_pipeline(model, "m", steps, tmp_path / "cache")

    assert again.cached and again.key == first.key
    assert not edited.cached and edited.key != first.key
    assert (Path(edited.artifact) / "steps.txt").read_text() == "two"


def test_a_rebuild_of_the_same_files_hashes_the_same_though_its_build_record_differs(model: Path, tmp_path: Path) -> None:
    """The export checks an artifact against the hash its trial measured; a cleared cache's rebuild must pass."""
    steps = [PassStep("counting", {"tag": "a", "delay_s": 0.01})]
    first = run_pipeline(model, "m", steps, tmp_path / "one")
    again = run_pipeline(model, "m", steps, tmp_path / "two")

    records = [json.loads((Path(b.artifact) / "autoopt_build.json").read_text()) for b in (first, again)]
    assert records[0] != records[1]  # its wall time and source path
    assert first.sha256 == again.sha256 == pipeline.artifact_sha256(Path(again.artifact))
