"""The bundle manifest: what a bundle is, and the SHA-256 of every file in it.

Deployed bundles load this module, so it uses the standard library only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# Python writes __pycache__ into a bundle the first time its code is imported; that is not tampering.
DEFAULT_EXCLUDE = (MANIFEST_NAME, "*__pycache__/*")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(folder: Path, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> dict[str, str]:
    """SHA-256 of every file under `folder`, keyed by its POSIX path relative to `folder`, sorted.
    `exclude` holds `fnmatch` patterns matched against those relative paths."""
    folder = Path(folder)
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not any(fnmatch.fnmatchcase(rel, pattern) for pattern in exclude):
            hashes[rel] = sha256_file(path)
    return hashes


def write_manifest(folder: Path, payload: dict[str, Any]) -> Path:
    """Write `folder/manifest.json`: `payload` plus `manifest_version` and `files` (see `hash_tree`)."""
    reserved = {"files", "manifest_version"} & payload.keys()
    if reserved:
        raise ValueError(f"payload keys {sorted(reserved)} are written by write_manifest; remove them from payload")
    folder = Path(folder)
    manifest = {"manifest_version": MANIFEST_VERSION, **payload, "files": hash_tree(folder)}
    path = folder / MANIFEST_NAME
    tmp = path.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))


def check_hashes(folder: Path) -> list[str]:
    """Problems found comparing `folder` with its manifest, one readable line each; empty means intact."""
    try:
        recorded = read_manifest(folder)["files"]
    except FileNotFoundError:
        return [f"{MANIFEST_NAME} is missing in {folder}"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return [f"{MANIFEST_NAME} in {folder} is unreadable: {type(e).__name__}: {e}"]
    actual = hash_tree(folder)
    problems = []
    for rel in sorted(recorded.keys() | actual.keys()):
        if rel not in actual:
            problems.append(f"missing file: {rel} (listed in {MANIFEST_NAME})")
        elif rel not in recorded:
            problems.append(f"extra file: {rel} (not listed in {MANIFEST_NAME})")
        elif recorded[rel] != actual[rel]:
            problems.append(f"hash mismatch: {rel} (manifest {recorded[rel][:12]}..., now {actual[rel][:12]}...)")
    return problems
