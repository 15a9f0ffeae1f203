from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoopt.bundle.manifest import check_hashes, hash_tree, sha256_file, write_manifest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.onnx").write_bytes(bytes(range(256)) * 64)
    (folder / "config.json").write_text('{"engine": "ort"}\n')
    return folder


def test_sha256_file_matches_known_digest(tmp_path: Path) -> None:
    path = tmp_path / "abc"
    path.write_bytes(b"abc")

    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_manifest_round_trip_is_clean(bundle: Path) -> None:
    path = write_manifest(bundle, {"candidate": {"engine": "ort"}, "definitions": {"x": "y"}})

    manifest = json.loads(path.read_text())
    assert manifest["manifest_version"] == 2 and manifest["candidate"] == {"engine": "ort"}
    assert sorted(manifest["files"]) == ["config.json", "model/model.onnx"]
    assert check_hashes(bundle) == []


def test_tampered_byte_is_reported_with_both_short_hashes(bundle: Path) -> None:
    write_manifest(bundle, {})
    model = bundle / "model" / "model.onnx"
    before = sha256_file(model)
    data = bytearray(model.read_bytes())
    data[1000] ^= 1
    model.write_bytes(bytes(data))

    problems = check_hashes(bundle)

    assert len(problems) == 1
    assert "hash mismatch: model/model.onnx" in problems[0]
    assert before[:12] in problems[0] and sha256_file(model)[:12] in problems[0]


def test_missing_and_extra_files_are_reported(bundle: Path) -> None:
    write_manifest(bundle, {})
    (bundle / "config.json").unlink()
    (bundle / "notes.txt").write_text("added later")

    problems = check_hashes(bundle)

    assert problems == [
        "missing file: config.json (listed in manifest.json)",
        "extra file: notes.txt (not listed in manifest.json)",
    ]


def test_python_bytecode_caches_are_not_tampering(bundle: Path) -> None:
    write_manifest(bundle, {})
    (bundle / "serve" / "__pycache__").mkdir(parents=True)
    (bundle / "serve" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")

    assert check_hashes(bundle) == []
    assert "serve/__pycache__/app.cpython-311.pyc" not in hash_tree(bundle)


def test_missing_manifest_and_reserved_payload_keys(bundle: Path) -> None:
    assert check_hashes(bundle) == [f"manifest.json is missing in {bundle}"]
    with pytest.raises(ValueError, match="files"):
        write_manifest(bundle, {"files": {}})


def test_manifest_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys, autoopt.bundle.manifest; "
        "print(sorted(m for m in ('mlflow', 'optuna', 'hydra', 'torch', 'numpy') if m in sys.modules))"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"


def test_a_genai_engine_s_staging_folder_beside_the_model_is_not_tampering(bundle: Path) -> None:
    from autoopt.engines.ort_genai.engine import _staging_folder

    write_manifest(bundle, {})
    # What a server running the bundle (or one killed before cleaning up) leaves beside model/.
    staging = _staging_folder(bundle / "model")
    (staging.path / "model.onnx").write_bytes(b"\0")

    assert check_hashes(bundle) == []
    staging.cleanup()


def test_a_manifest_whose_files_entry_is_not_a_table_is_reported_not_raised(bundle: Path) -> None:
    path = write_manifest(bundle, {})
    manifest = json.loads(path.read_text())
    manifest["files"] = sorted(manifest["files"])
    path.write_text(json.dumps(manifest))

    assert check_hashes(bundle) == [f"manifest.json in {bundle} is unreadable: files is a list, not a table"]


def test_a_manifest_that_is_not_an_object_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[]")

    (problem,) = check_hashes(tmp_path)

    assert "unreadable" in problem and "not an object" in problem
