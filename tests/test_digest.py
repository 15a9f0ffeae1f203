"""Hashes of code: a package's digest changes with any of its sources, and only with its own."""

from __future__ import annotations

import re
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
