"""The bundle manifest: what a bundle is, the SHA-256 of every file in it, and of its own body.

Deployed bundles load this module, so it uses the standard library and autoopt's stdlib-only modules.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoopt.bundle.layout import MANIFEST as MANIFEST_NAME
from autoopt.bundle.layout import UNHASHED as DEFAULT_EXCLUDE
from autoopt.config.errors import ConfigError
from autoopt.config.schema import DecodingConfig
from autoopt.config.serde import from_dict
from autoopt.config.serving import ServingConfig
from autoopt.digest import sha256_file

MANIFEST_VERSION = 2
BODY_HASH = "manifest_sha256"  # SHA-256 of the manifest's canonical JSON without this field


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
    reserved = {"files", "manifest_version", BODY_HASH} & payload.keys()
    if reserved:
        raise ValueError(f"payload keys {sorted(reserved)} are written by write_manifest; remove them from payload")
    folder = Path(folder)
    manifest = {"manifest_version": MANIFEST_VERSION, **payload, "files": hash_tree(folder)}
    manifest = json.loads(json.dumps(manifest, default=str))  # the body as it will be read back
    manifest[BODY_HASH] = body_sha256(manifest)
    path = folder / MANIFEST_NAME
    tmp = path.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def body_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no whitespace) without `manifest_sha256`."""
    body = {k: v for k, v in manifest.items() if k != BODY_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise TypeError(f"{MANIFEST_NAME} holds a {type(manifest).__name__}, not an object")
    return manifest


def check_hashes(folder: Path) -> list[str]:
    """Problems found comparing `folder` with its manifest, one readable line each; empty means intact."""
    try:
        manifest = read_manifest(folder)
        recorded = manifest["files"]
    except FileNotFoundError:
        return [f"{MANIFEST_NAME} is missing in {folder}"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return [f"{MANIFEST_NAME} in {folder} is unreadable: {type(e).__name__}: {e}"]
    if not isinstance(recorded, dict):
        return [f"{MANIFEST_NAME} in {folder} is unreadable: files is a {type(recorded).__name__}, not a table"]
    problems = []
    if manifest.get(BODY_HASH) != body_sha256(manifest):
        problems.append(f"{MANIFEST_NAME} was edited: its body no longer matches its {BODY_HASH}")
    actual = hash_tree(folder)
    for rel in sorted(recorded.keys() | actual.keys()):
        if rel not in actual:
            problems.append(f"missing file: {rel} (listed in {MANIFEST_NAME})")
        elif rel not in recorded:
            problems.append(f"extra file: {rel} (not listed in {MANIFEST_NAME})")
        elif recorded[rel] != actual[rel]:
            problems.append(f"hash mismatch: {rel} (manifest {recorded[rel][:12]}..., now {actual[rel][:12]}...)")
    return problems


def recorded_decoding(workload: dict[str, Any]) -> DecodingConfig:
    """How a manifest's measured requests chose their tokens (`workload.decoding`); greedily in a manifest from before
    it was recorded."""
    return DecodingConfig(**workload.get("decoding", {}))


def recorded_serving(manifest: dict[str, Any]) -> ServingConfig:
    """The workload's serving settings (traffic, classes, starvation bound) the bundle was measured under; the
    defaults where its manifest does not record them."""
    recorded = manifest.get("resolved_config", {}).get("workload", {}).get("serving")
    if recorded is None:
        return ServingConfig()
    try:
        return from_dict(ServingConfig, recorded)
    except ValueError as e:
        raise ConfigError(f"manifest resolved_config.workload.serving: {e}; re-export the bundle with this "
                          "autoopt version") from e
