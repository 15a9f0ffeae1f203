"""Hashes: a package's digest changes with any of its sources (only those); a model folder's fingerprint with any write."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from autoopt import digest


def test_a_package_digest_changes_with_any_of_its_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "pkg_" + re.sub(r"\W", "_", tmp_path.name)
    package = tmp_path / name
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("X = 1\n")
    (package / "notes.txt").write_text("not code")
    monkeypatch.syspath_prepend(str(tmp_path))

    before = digest.package_digest(name)
    (package / "notes.txt").write_text("still not code")
    digest.package_digest.cache_clear()
    unchanged = digest.package_digest(name)
    (package / "sub" / "deep.py").write_text("X = 2\n")
    digest.package_digest.cache_clear()

    assert unchanged == before != digest.package_digest(name)


def test_a_folder_fingerprint_changes_when_a_file_is_rewritten_with_its_old_size_and_modification_time(
    tmp_path: Path,
) -> None:
    """A fine-tune written over a checkpoint in place, its timestamps put back as `cp -p` or `rsync -a` do."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    before = digest.folder_fingerprint(tmp_path)
    stat = weights.stat()
    time.sleep(0.01)  # the change time's clock must move

    weights.write_bytes(b"\x01" * 64)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert weights.stat().st_mtime_ns == stat.st_mtime_ns and weights.stat().st_size == stat.st_size
    assert digest.folder_fingerprint(tmp_path) != before
    assert digest.folder_fingerprint(tmp_path) == digest.folder_fingerprint(tmp_path)


def test_a_source_digest_follows_a_module_whose_package_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An optional dependency missing where a package's __init__ imports it must not drop that package's modules
    from the digest of the code that imports them (finding a submodule's spec would import its parent)."""
    name = "pkg_" + re.sub(r"\W", "_", tmp_path.name)
    package = tmp_path / name
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("import a_library_this_machine_lacks\n")
    (package / "sub" / "helper.py").write_text("X = 1\n")
    (package / "main.py").write_text(f"from {name}.sub import helper\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    before = digest.source_digest(f"{name}.main")
    (package / "sub" / "helper.py").write_text("X = 2\n")
    digest.source_digest.cache_clear()

    assert digest.source_digest(f"{name}.main") != before
