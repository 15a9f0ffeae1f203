"""ONNX Runtime static int8 quantization (QDQ) of the exported decoder-with-past graph, calibrated on
token windows of training text, never on the held-out evaluation text.

Weights become int8 (per channel by default) and MatMul activations uint8 with ranges fixed by the
calibration: QuantizeLinear → DequantizeLinear pairs around every MatMul, which ORT fuses into
integer kernels at session creation. The calibration text's identity (`calibration_sha256`) is a
setting, so it enters the build cache key; the pass recomputes it and refuses a stale one.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from autoopt.passes.onnx_files import MODEL_FILE, copy_side_files, needs_external_data, weights_as_initializers

METHODS: dict[str, str] = {
    "minmax": "activation range = min/max seen on the calibration windows",
    "entropy": "range that minimises the KL divergence between float and int8 histograms",
    "percentile": "range that keeps the given percentile of absolute activation values",
}
BUILTIN_TRAIN = "builtin-train"  # the built-in corpus' training split (autoopt.models.corpus)
SAMPLE_COUNTS = (8, 32, 128)  # calibration-set sizes worth searching (windows of `window` tokens)
_WEIGHT_OPS = ("MatMul",)
# Entropy searches thresholds between QUANTIZED_BINS/2 and BINS/2 histogram bins from zero (TensorRT uses 2048/128).
_ENTROPY_BINS, _ENTROPY_QUANTIZED_BINS = 1024, 128


def calibration_identity(calibration_text: str = BUILTIN_TRAIN) -> str:
    """Hash (16 hex) of the calibration text: `BUILTIN_TRAIN` or the path of a UTF-8 text file."""
    digest = hashlib.sha256()
    if calibration_text == BUILTIN_TRAIN:
        from autoopt.models.corpus import corpus_fingerprint

        digest.update(f"{BUILTIN_TRAIN}\0{corpus_fingerprint()}".encode())
    else:
        path = Path(calibration_text)
        if not path.is_file():
            raise ValueError(
                f"ort_int8_static calibration_text={calibration_text!r} is neither {BUILTIN_TRAIN!r} nor a file"
            )
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def calibration_settings(calibration_text: str = BUILTIN_TRAIN) -> dict[str, str]:
    """The two settings that name the calibration data in a `PassStep` (and so in its cache key)."""
    return {"calibration_text": calibration_text, "calibration_sha256": calibration_identity(calibration_text)}


def run_ort_int8_static(
    src: Path,
    dst: Path,
    calibration_sha256: str,
    method: str = "minmax",
    samples: int = 32,
    window: int = 128,
    calibration_text: str = BUILTIN_TRAIN,
    per_channel: bool = True,
    percentile: float = 99.999,
) -> None:
    """Quantize `src/model.onnx` to QDQ int8 calibrated on `samples` windows of `window` tokens.

    `calibration_sha256` must equal `calibration_identity(calibration_text)` (use
    `calibration_settings`). `percentile` applies to method=percentile only. Raises ValueError on a
    bad setting; RuntimeError when entropy/percentile clipped no range (they would then be minmax) or
    when the written graph lacks a QDQ pair around a weight MatMul.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _check_settings(method, samples, window, per_channel, percentile)
    if calibration_sha256 != (actual := calibration_identity(calibration_text)):
        raise ValueError(
            f"ort_int8_static calibration_sha256={calibration_sha256!r} does not match "
            f"calibration_text={calibration_text!r} (its hash is {actual!r}); build the settings with "
            "autoopt.passes.ort_static.calibration_settings()"
        )
    windows = calibration_windows(src, calibration_text, samples, window)
    copy_side_files(src, dst)
    # inside dst, not beside it: see ort_quant.run_ort_int8_dynamic
    with tempfile.TemporaryDirectory(prefix="ort_static_", dir=dst) as work:
        model = weights_as_initializers(src, Path(work))
        ranges = Path(work) / "ranges.json"
        calibrate_method = _calibrate(model, windows, method, percentile, Path(work), ranges)
        quantize_static(
            model,
            dst / MODEL_FILE,
            None,  # the ranges come from the cache written above
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(_WEIGHT_OPS),
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            use_external_data_format=needs_external_data(src),
            calibration_cache_path=ranges,
        )
    check_qdq(src / MODEL_FILE, dst / MODEL_FILE)


def _calibrate(model: Path, windows: np.ndarray, method: str, percentile: float, work: Path, out: Path) -> object:
    """Collect activation ranges with `method` and save them where `quantize_static` reads a cache.

    Called directly rather than through `quantize_static`, which cannot set histogram bins: with its
    defaults (128 bins, 128 quantized bins) entropy has one candidate threshold and equals minmax.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}.get(
        method, CalibrationMethod.Percentile
    )
    options = {
        "minmax": {},
        "entropy": {"num_bins": _ENTROPY_BINS, "num_quantized_bins": _ENTROPY_QUANTIZED_BINS},
        "percentile": {"percentile": percentile},
    }[method]
    calibrator = create_calibrator(
        model,
        list(_WEIGHT_OPS),
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=kind,
        use_external_data_format=needs_external_data(model.parent),
        extra_options=options,
    )
    calibrator.collect_data(_DecoderInputs(model, windows))
    ranges = calibrator.compute_data()
    if method != "minmax":
        observed = {name: (h[2], h[3]) for name, h in calibrator.collector.histogram_dict.items()}  # min, max
        _require_clipping(ranges, observed, method)
    save_tensors_data(ranges, out)
    return kind


def _require_clipping(ranges: object, observed: dict[str, tuple[float, float]], method: str) -> None:
    """A histogram method that keeps every tensor's observed (min, max) did nothing beyond minmax."""
    for name, (low, high) in observed.items():
        if name in ranges and not np.allclose([ranges[name].lowest, ranges[name].highest], [low, high]):
            return
    raise RuntimeError(f"ort_int8_static method={method} kept every observed range: it acted as minmax")


def _check_settings(method: str, samples: int, window: int, per_channel: bool, percentile: float) -> None:
    if method not in METHODS:
        raise ValueError(f"ort_int8_static method={method!r} is unknown; choose one of: {', '.join(METHODS)}")
    for name, value in (("samples", samples), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ort_int8_static {name}={value!r} must be a positive integer (e.g. 32)")
    if not isinstance(per_channel, bool):
        raise ValueError(f"ort_int8_static per_channel={per_channel!r} must be a bool")
    if not 90.0 <= percentile <= 100.0:
        raise ValueError(f"ort_int8_static percentile={percentile!r} must be within [90, 100], e.g. 99.999")
    if method != "percentile" and percentile != 99.999:
        raise ValueError(f"ort_int8_static percentile={percentile} applies to method=percentile only, not {method}")


def calibration_windows(model_dir: Path, calibration_text: str, samples: int, window: int) -> np.ndarray:
    """`samples` int64 windows of `window` tokens, evenly spaced over the tokenized calibration text
    (the model folder's `tokenizer.json`); deterministic."""
    from tokenizers import Tokenizer

    if calibration_text == BUILTIN_TRAIN:
        from autoopt.models.corpus import load_corpus

        texts = list(load_corpus().train)
    else:
        texts = [Path(calibration_text).read_text(encoding="utf-8")]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = np.fromiter((t for e in tokenizer.encode_batch(texts) for t in e.ids), dtype=np.int64)
    if len(ids) < window:
        raise ValueError(
            f"ort_int8_static calibration_text={calibration_text!r} has {len(ids)} tokens, fewer than window={window}"
        )
    starts = np.linspace(0, len(ids) - window, num=samples).astype(np.int64)
    return np.stack([ids[s : s + window] for s in starts])


class _DecoderInputs:
    """Feeds each window as a prefill (empty past), the inputs `onnx_export`'s graph takes."""

    def __init__(self, model: Path, windows: np.ndarray):
        graph = onnx.load(str(model), load_external_data=False).graph
        self._past = {
            i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
            for i in graph.input
            if i.name.startswith("past_key_values.")
        }
        self._rows: Iterator[np.ndarray] = iter(windows)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        if row is None:
            return None
        feed = {"input_ids": row[None, :], "attention_mask": np.ones((1, row.shape[0]), dtype=np.int64)}
        for name, (_, heads, _, head_dim) in self._past.items():
            feed[name] = np.zeros((1, heads, 0, head_dim), dtype=np.float32)
        return feed

    def __iter__(self) -> _DecoderInputs:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def check_qdq(src: Path, dst: Path) -> None:
    """Raise RuntimeError unless every MatMul that had a weight initializer in `src`, directly or through a
    Transpose (a tied lm_head), now reads both its operands from DequantizeLinear nodes in `dst`, its weight
    from an int8 initializer (a weight quantized as an activation, uint8 and per tensor at every call, fails)."""
    source = onnx.load(str(src), load_external_data=False).graph
    source_weights = {i.name for i in source.initializer}
    source_weights |= {n.output[0] for n in source.node if n.op_type == "Transpose" and n.input[0] in source_weights}
    weight_matmuls = {n.name for n in source.node if n.op_type in _WEIGHT_OPS and set(n.input) & source_weights}
    graph = onnx.load(str(dst), load_external_data=False).graph
    producer = {out: n for n in graph.node for out in n.output}
    int8_inits = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    wrapped = set()
    for node in graph.node:
        if node.name not in weight_matmuls:
            continue
        feeders = [producer.get(name) for name in node.input]
        if all(f is not None and f.op_type == "DequantizeLinear" for f in feeders) and any(
            f.input[0] in int8_inits for f in feeders
        ):
            wrapped.add(node.name)
    quantize_ops = sum(n.op_type == "QuantizeLinear" for n in graph.node)
    missing = sorted(weight_matmuls - wrapped)
    if not weight_matmuls or missing or quantize_ops == 0:
        raise RuntimeError(
            f"ort_int8_static: {dst} lacks QuantizeLinear/DequantizeLinear around {len(missing)} of "
            f"{len(weight_matmuls)} weight MatMuls ({json.dumps(missing[:4])}), QuantizeLinear nodes: {quantize_ops}"
        )
