from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from autoopt.passes.ort_static import (
    BUILTIN_TRAIN,
    calibration_identity,
    calibration_settings,
    calibration_windows,
    check_qdq,
    run_ort_int8_static,
)


def _prefill_logits(model: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feed[i.name] = np.zeros((ids.shape[0], i.shape[1], 0, i.shape[3]), dtype=np.float32)
    return session.run(["logits"], feed)[0]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text("def read_file(path):\n    return open(path).read()\n" * 40, encoding="utf-8")
    return path


def test_calibration_identity_follows_the_text_so_it_changes_the_cache_key(text_file: Path, tmp_path: Path):
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text() + "x", encoding="utf-8")

    assert calibration_identity(str(text_file)) == calibration_identity(str(text_file))
    assert len({calibration_identity(str(text_file)), calibration_identity(str(other)), calibration_identity()}) == 3
    assert calibration_settings(str(text_file))["calibration_sha256"] == calibration_identity(str(text_file))


def test_windows_are_evenly_spaced_over_the_given_text(tiny_model: Path, text_file: Path):
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tiny_model / "tokenizer.json")).encode(text_file.read_text()).ids

    windows = calibration_windows(tiny_model, str(text_file), samples=3, window=16)

    assert windows.shape == (3, 16) and windows.dtype == np.int64
    assert windows[0].tolist() == ids[:16] and windows[-1].tolist() == ids[-16:]


@pytest.mark.slow
def test_builtin_windows_come_from_the_training_split(tiny_model: Path):
    from tokenizers import Tokenizer

    from autoopt.models.corpus import load_corpus

    first_train = Tokenizer.from_file(str(tiny_model / "tokenizer.json")).encode(load_corpus().train[0]).ids

    windows = calibration_windows(tiny_model, BUILTIN_TRAIN, samples=2, window=8)

    assert windows[0].tolist() == first_train[:8]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"method": "kl"}, "method='kl'"),
        ({"samples": 0}, "samples=0"),
        ({"window": 1.5}, "window=1.5"),
        ({"method": "minmax", "percentile": 99.9}, "percentile=99.9"),
        ({"method": "percentile", "percentile": 50.0}, "percentile=50.0"),
        ({"calibration_sha256": "0" * 16}, "calibration_sha256"),
        ({"calibration_text": "/no/such/file.txt", "calibration_sha256": "x"}, "calibration_text='/no/such/file.txt'"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_any_work(settings: dict, named: str, tmp_path: Path):
    settings = {"calibration_sha256": calibration_identity(), **settings}
    with pytest.raises(ValueError) as error:
        run_ort_int8_static(tmp_path / "absent", tmp_path / "out", **settings)

    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autoopt.passes.onnx_export import run_onnx_export

    out = tmp_path_factory.mktemp("export")
    run_onnx_export(tiny_model, out)
    return out


@pytest.fixture(scope="module")
def static_builds(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("static")
    text = root / "calibration.txt"
    text.write_text("def read_file(path):\n    return open(path).read()\n" * 40, encoding="utf-8")
    builds = {}
    for method in ("minmax", "entropy", "percentile"):
        builds[method] = root / method
        builds[method].mkdir()
        settings = calibration_settings(str(text))
        run_ort_int8_static(exported, builds[method], method=method, samples=4, window=32, **settings)
    return builds


def _activation_scales(folder: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(folder / "model.onnx")).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale") and not i.dims}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_wraps_every_weight_matmul_in_qdq_and_stays_close(
    exported: Path, static_builds: dict[str, Path], method: str
):
    check_qdq(exported / "model.onnx", static_builds[method] / "model.onnx")

    ids = np.arange(1, 17, dtype=np.int64)[None, :]
    quantized, reference = _prefill_logits(static_builds[method], ids), _prefill_logits(exported, ids)
    assert np.isfinite(quantized).all() and quantized.shape == reference.shape
    assert 0 < np.abs(quantized - reference).max() < np.abs(reference).max()


@pytest.mark.slow
def test_each_calibration_method_sets_its_own_activation_ranges(static_builds: dict[str, Path]):
    minmax = _activation_scales(static_builds["minmax"])

    for method in ("entropy", "percentile"):
        other = _activation_scales(static_builds[method])
        assert other.keys() == minmax.keys()
        assert any(not np.allclose(minmax[k], other[k]) for k in minmax), method


@pytest.mark.slow
def test_qdq_check_rejects_an_unquantized_graph(exported: Path):
    with pytest.raises(RuntimeError, match="lacks QuantizeLinear/DequantizeLinear around"):
        check_qdq(exported / "model.onnx", exported / "model.onnx")
