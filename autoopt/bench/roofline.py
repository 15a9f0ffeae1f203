"""Roofline: how close decode runs to the machine's memory bandwidth.

A decode step of a small-batch LLM must read every weight it uses and the whole KV cache once, and does
little arithmetic per byte, so its speed limit is bytes per step / memory bandwidth:

    efficiency = bytes per decode step x decode steps per second / bandwidth

- bandwidth: declared by the target config (`memory_bandwidth_gbps` with its `bandwidth_source`: a GPU card's
  datasheet figure, which cannot be measured from the host), or on CPU targets that leave it 0,
  `measure_bandwidth`, a numpy copy of a buffer well above the last-level cache (STREAM's rule:
  each array >= 4x the cache), split over the target's cores, best of N, counting the bytes read and
  the bytes written (STREAM "copy" convention; the write-allocate read the CPU may add is not counted).
- weights at stored precision: safetensors headers (torch, with the candidate's load-time cast) or the ONNX
  initializers (ort, ort_genai; MatMulNBits' packed weights, scales and zero points are initializers too).
  A table read by Gather (the token embedding) costs only the rows a step gathers, one per sequence; the
  lm_head reads all of its matrix (tied embeddings: the table counts in full). torch_compiled's weight-only
  int8/int4 and float8 are counted as its load-time quantization stores them (`weight_only_bytes`).
- KV read: layers x 2 x kv_heads x head_dim x context x dtype bytes x batch, at the mean past length of the
  workload's decode steps.

Where the weights fit in the last-level cache (a 12.6M model on a CPU with a 260 MB L3), decode can run
above this DRAM roofline (efficiency > 1): the figure then says the DRAM bound does not bind, not that the
measurement is wrong. `Bandwidth.llc_bytes` and `Roofline.fits_llc` record it. A working set a little larger
than the cache can also run above it (much of it stays cached from one step to the next), as can any where the
copy bandwidth measured low (`Roofline.note`).
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoopt.artifacts import GENAI_CONFIG, ONNX_MODEL
from autoopt.config.schema import TargetConfig
from autoopt.result import Bandwidth, Roofline

BANDWIDTH_METHOD = (
    "numpy.copyto of a float64 buffer split over {threads} threads, {mib} MiB per array, best of {repeats}; "
    "bytes = 2 x buffer (read + write)"
)
_MIN_BUFFER = 256 * 2**20

_SAFETENSORS_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
# quant → the float dtype TorchEngine.load casts every float tensor to (whatever the checkpoint stores), its bytes
_TORCH_CASTS = {"none": ("F32", 4), "int8_dynamic": ("F32", 4), "bf16": ("BF16", 2), "fp16": ("F16", 2)}
_LOAD_TIME_QUANTS = ("int8_weight", "int4", "fp8")  # torch_compiled's load-time quantizations, bf16 activations
_GATHERS = {"Gather", "GatherBlockQuantized"}  # ops whose input 0 table is read by row


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of weights a decode step reads, by stored dtype; `skipped` is what row-gathered tables
    (embeddings) hold but a step does not read."""

    by_dtype: dict[str, int]
    skipped: int

    @property
    def total(self) -> int:
        return sum(self.by_dtype.values())


@dataclass(frozen=True)
class KvGeometry:
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int

    def read_bytes(self, context: float, batch: int = 1) -> float:
        """Bytes of K and V read by one decode step attending over `context` cached positions."""
        return self.layers * 2 * self.kv_heads * self.head_dim * context * self.dtype_bytes * batch


def last_level_cache_bytes() -> int | None:
    """The largest cache of cpu0 from sysfs (Linux), or None where it cannot be read."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else None


def measure_bandwidth(
    buffer_bytes: int | None = None, repeats: int = 5, threads: int | None = None
) -> Bandwidth:
    """Best of `repeats` copies of `buffer_bytes` (default: 4x the last-level cache, at least 256 MiB; two
    such arrays are allocated) split over `threads` (default: the CPUs this process may run on) — numpy
    releases the GIL for the copy, so the threads copy concurrently."""
    llc = last_level_cache_bytes()
    if buffer_bytes is None:
        buffer_bytes = max(_MIN_BUFFER, 4 * llc if llc else 0)
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: needs >= 1")
    threads = threads or len(os.sched_getaffinity(0))
    n = buffer_bytes // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)  # its pages are faulted in by the untimed first copy
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def copy(part: slice) -> None:
        np.copyto(dst[part], src[part])

    samples = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(copy, slices))  # page faults and thread start-up, untimed
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, slices))
            samples.append(2 * n * 8 / (time.perf_counter() - start) / 1e9)
    return Bandwidth(
        gb_per_s=max(samples),
        samples=tuple(samples),
        buffer_bytes=n * 8,
        threads=threads,
        llc_bytes=llc,
        method=BANDWIDTH_METHOD.format(threads=threads, mib=n * 8 // 2**20, repeats=repeats),
    )


def declared_bandwidth(gb_per_s: float, source: str) -> Bandwidth:
    """A bandwidth taken from a datasheet or the command line, not measured: one sample, no cache size."""
    if gb_per_s <= 0:
        raise ValueError(f"gb_per_s={gb_per_s}: a declared bandwidth must be > 0 GB/s")
    return Bandwidth(gb_per_s=gb_per_s, samples=(gb_per_s,), buffer_bytes=0, threads=0, llc_bytes=None,
                     method=f"declared, not measured: {source}")


def target_bandwidth(target: TargetConfig, repeats: int = 3) -> Bandwidth | None:
    """The bandwidth a run's rooflines divide by: the target's declared figure where it has one, else measured
    on CPU targets (`measure_bandwidth` over the target's cores); None for a device target without one
    (start-up validation refuses that; see `autoopt.config.load.check_bandwidth`)."""
    if target.memory_bandwidth_gbps > 0:
        return declared_bandwidth(target.memory_bandwidth_gbps, target.bandwidth_source)
    if target.device == "cpu":
        return measure_bandwidth(threads=target.cores or None, repeats=repeats)
    return None


# ---- weights -------------------------------------------------------------------------------------------


def safetensors_weight_bytes(folder: Path, quant: str = "none", rows_read: int = 1) -> WeightBytes:
    """Weights of an HF folder's `*.safetensors` as `TorchEngine.load` holds them for `quant`: floats cast to
    fp32 (none; a bf16 checkpoint is loaded as fp32), to 2 bytes (bf16, fp16), or int8 Linear weights plus an
    fp32 scale per output row and fp32 otherwise (int8_dynamic: 2-D `*.weight` tensors other than the
    embedding). Tables named `embed_tokens` count
    `rows_read` rows, unless the config ties them to the lm_head and it reads the table itself (int8_dynamic
    gives a tied lm_head its own int8 copy: that copy counts, and the table counts `rows_read` rows)."""
    tied, tensors = _safetensors_tensors(folder)
    by_dtype: dict[str, int] = defaultdict(int)
    skipped = 0
    for name, shape, dtype in tensors:
        elements = int(np.prod(shape)) if shape else 1
        per = _SAFETENSORS_BYTES[dtype]
        embedding = "embed_tokens" in name and len(shape) == 2
        if quant in _TORCH_CASTS and dtype in ("F32", "F16", "BF16"):
            dtype, per = _TORCH_CASTS[quant]
        if quant == "int8_dynamic" and name.endswith(".weight") and len(shape) == 2 and not embedding:
            by_dtype["I8"] += elements
            by_dtype["F32"] += 4 * shape[0]
            continue
        own_lm_head = embedding and tied and quant == "int8_dynamic"
        if own_lm_head:
            by_dtype["I8"] += elements
            by_dtype["F32"] += 4 * shape[0]
        size = elements * per
        if embedding and (not tied or own_lm_head):
            read = size * min(rows_read, shape[0]) // shape[0]
            skipped += size - read
            size = read
        by_dtype[dtype] += size
    return WeightBytes(dict(by_dtype), skipped)


def weight_only_bytes(
    folder: Path, quant: str, group_size: int | None = None, device: str = "cpu", rows_read: int = 1
) -> WeightBytes:
    """Weights of an HF folder as `TorchCompiledEngine.load` holds them under `quant`: floats in bf16; every
    Linear weight (2-D `*.weight` but the embedding) int8 with one bf16 scale per output row (int8_weight),
    int4 packed two per byte with a bf16 scale and zero per group of `group_size` input channels (int4;
    `lm_head`, and layers whose shape the int4 kernel cannot take on `device`, stay int8), or float8 with one
    fp32 scale per output row (fp8; layers whose sides are not multiples of 16 stay bf16). The lm_head gets
    its own quantized copy of a tied table, so the embedding counts `rows_read` rows (unless fp8 leaves a tied
    lm_head unquantized: then the table is read in full)."""
    if quant not in _LOAD_TIME_QUANTS:
        raise ValueError(f"quant={quant!r}: weight_only_bytes counts {', '.join(_LOAD_TIME_QUANTS)}")
    if quant == "int4" and not group_size:
        raise ValueError("quant=int4: pass group_size (the candidate's quant_block_size) to count its scales")
    tied, tensors = _safetensors_tensors(folder)
    by_dtype: dict[str, int] = defaultdict(int)
    skipped = 0

    def linear(rows: int, cols: int, int4: bool) -> None:
        if quant == "fp8" and rows % 16 == 0 and cols % 16 == 0:  # the engine's _fp8_fits
            by_dtype["F8_E4M3"] += rows * cols
            by_dtype["F32"] += 4 * rows
        elif quant == "fp8":
            by_dtype["BF16"] += 2 * rows * cols
        elif int4 and _int4_fits(rows, cols, group_size, device):
            by_dtype["INT4"] += rows * cols // 2
            by_dtype["BF16"] += 2 * 2 * rows * (cols // group_size)  # type: ignore[operator]
        else:
            by_dtype["I8"] += rows * cols
            by_dtype["BF16"] += 2 * rows

    for name, shape, _ in tensors:
        elements = int(np.prod(shape)) if shape else 1
        if "embed_tokens" in name and len(shape) == 2:
            rows, cols = shape
            if tied and quant == "fp8" and (rows % 16 or cols % 16):
                by_dtype["BF16"] += 2 * rows * cols  # the unquantized lm_head reads the whole table
                continue
            by_dtype["BF16"] += 2 * cols * min(rows_read, rows)
            skipped += 2 * cols * max(rows - rows_read, 0)
            if tied:
                linear(rows, cols, int4=False)  # the lm_head's own quantized copy of the table
        elif name.endswith(".weight") and len(shape) == 2:
            linear(*shape, int4=quant == "int4" and not name.endswith("lm_head.weight"))
        else:
            by_dtype["BF16"] += 2 * elements
    return WeightBytes(dict(by_dtype), skipped)


def _safetensors_tensors(folder: Path) -> tuple[bool, list[tuple[str, list[int], str]]]:
    """Whether the HF folder's config ties the embedding to the lm_head, and every tensor of its
    `*.safetensors` files as (name, shape, safetensors dtype), read from the headers only."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}; pass the torch artifact (an HF model folder)")
    tensors = [(name, info["shape"], info["dtype"]) for file in files
               for name, info in _safetensors_header(file).items() if name != "__metadata__"]
    return _hf_config(folder).get("tie_word_embeddings", False), tensors


def _int4_fits(n: int, k: int, group_size: int | None, device: str) -> bool:
    """The int4 kernels' shape rule, as `torch_compiled.engine._int4_fits` applies it (tinygemm on cuda also
    needs K % 32 and N % 8)."""
    if not group_size or k % group_size:
        return False
    return device != "cuda" or (k % 32 == 0 and n % 8 == 0)


def onnx_weight_bytes(model_path: Path, rows_read: int = 1) -> WeightBytes:
    """Initializers of an ONNX graph (external data included, not loaded: sizes come from dims and dtype),
    by dtype. An initializer read only as the table of a Gather / GatherBlockQuantized (input 0, or its
    scales and zero points, inputs 2 and 3) counts `rows_read` of its first-axis rows."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    gathered: set[str] = set()
    other_use: set[str] = set()
    for node in graph.node:
        for position, name in enumerate(node.input):
            if node.op_type in _GATHERS and (position == 0 or (node.op_type != "Gather" and position >= 2)):
                gathered.add(name)
            else:
                other_use.add(name)
    by_dtype: dict[str, int] = defaultdict(int)
    skipped = 0
    for init in graph.initializer:
        dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        elements = int(np.prod(init.dims)) if init.dims else 1
        size = elements * np.dtype(dtype).itemsize
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            size = (elements + 1) // 2
        if init.name in gathered and init.name not in other_use and init.dims:
            read = size * min(rows_read, init.dims[0]) // init.dims[0]
            skipped += size - read
            size = read
        by_dtype[onnx.TensorProto.DataType.Name(init.data_type)] += size
    return WeightBytes(dict(by_dtype), skipped)


# ---- KV cache ------------------------------------------------------------------------------------------


def hf_kv_geometry(folder: Path, quant: str = "none") -> KvGeometry:
    """KV geometry from an HF `config.json`; dtype as `TorchEngine` runs it (2 bytes for bf16/fp16)."""
    config = _hf_config(Path(folder))
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return KvGeometry(
        layers=config["num_hidden_layers"],
        kv_heads=config.get("num_key_value_heads", heads),
        head_dim=head_dim,
        dtype_bytes=_TORCH_CASTS.get(quant, ("F32", 4))[1],
    )


def onnx_kv_geometry(model_path: Path, head_dim: int | None = None) -> KvGeometry:
    """KV geometry from the graph's `past_key_values.<i>.key|value` inputs, shaped (batch, kv_heads, past,
    head_dim), as both autoopt's export and the onnxruntime-genai builder name them. `head_dim` fills a
    symbolic last axis (the genai builder's `kv_cache_dim`; its config has `head_size`)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    pasts = [i for i in model.graph.input if i.name.startswith("past_key_values.")]
    if not pasts:
        raise ValueError(f"{model_path} has no past_key_values.* inputs; is it a decoder-with-past graph?")
    tensor = pasts[0].type.tensor_type
    dims = tensor.shape.dim
    head_dim = dims[3].dim_value or head_dim
    if not dims[1].dim_value or not head_dim:
        raise ValueError(
            f"{model_path}: {pasts[0].name} has symbolic kv_heads or head_dim "
            f"({dims[1].dim_param or dims[1].dim_value}, {dims[3].dim_param or dims[3].dim_value}); pass head_dim"
        )
    return KvGeometry(
        layers=len(pasts) // 2,
        kv_heads=dims[1].dim_value,
        head_dim=head_dim,
        dtype_bytes=np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize,
    )


def mean_decode_context(shapes: Sequence[tuple[int, int]]) -> float:
    """Mean attended length over every decode step of requests (prompt_len, new_tokens), each request
    weighted by its decode steps: step i (1..new_tokens-1) finds prompt_len + i - 1 positions cached, writes
    its own key and value, and attends over prompt_len + i."""
    total = steps = 0.0
    for prompt_len, new_tokens in shapes:
        n = new_tokens - 1
        # sum over i = 1..n of (prompt_len + i): positions in the cache when step i attends
        total += n * prompt_len + n * (n + 1) / 2
        steps += n
    if steps == 0:
        raise ValueError(f"shapes {list(shapes)} have no decode step (every new_tokens < 2)")
    return total / steps


# ---- the roofline --------------------------------------------------------------------------------------


def roofline(
    weights: WeightBytes,
    kv: KvGeometry,
    mean_context: float,
    tpot_ms: float,
    bandwidth: Bandwidth,
    batch: int = 1,
) -> Roofline:
    """`tpot_ms` is the measured time of one decode step (TPOT p50 at this batch)."""
    if tpot_ms <= 0:
        raise ValueError(f"tpot_ms={tpot_ms}: needs a positive measured decode step time")
    kv_bytes = kv.read_bytes(mean_context, batch)
    per_step = weights.total + kv_bytes
    steps_per_s = 1e3 / tpot_ms
    bound = bandwidth.gb_per_s * 1e9 / per_step
    return Roofline(
        weight_bytes=weights.total,
        kv_bytes=kv_bytes,
        mean_context=mean_context,
        bytes_per_step=per_step,
        steps_per_s=steps_per_s,
        bandwidth_gb_per_s=bandwidth.gb_per_s,
        bound_steps_per_s=bound,
        efficiency=steps_per_s / bound,
        fits_llc=None if bandwidth.llc_bytes is None else per_step <= bandwidth.llc_bytes,
    )


def artifact_weights_and_kv(
    engine: str,
    artifact: Path,
    quant: str = "none",
    rows_read: int = 1,
    group_size: int | None = None,
    device: str = "cpu",
) -> tuple[WeightBytes, KvGeometry]:
    """Weights and KV geometry of a built artifact: HF safetensors for torch (and torch_compiled, whose
    int8_weight/int4/fp8 need `group_size` for int4 and the `device` whose kernel rules apply), `model.onnx`
    for ort (and ort_tensorrt), the decoder named in `genai_config.json` for ort_genai."""
    artifact = Path(artifact)
    if engine == "torch_compiled" and quant in _LOAD_TIME_QUANTS:
        kv = hf_kv_geometry(artifact, "bf16")  # bf16 activations, so a bf16 cache
        return weight_only_bytes(artifact, quant, group_size, device, rows_read), kv
    if engine == "torch_compiled" and quant in ("none", "bf16", "fp16"):
        engine = "torch"  # the same weights, cast the same way, as eager torch
    if engine == "torch":
        return safetensors_weight_bytes(artifact, quant, rows_read), hf_kv_geometry(artifact, quant)
    head_dim = None
    if engine == "ort_genai":
        decoder = json.loads((artifact / GENAI_CONFIG).read_text())["model"]["decoder"]
        graph, head_dim = artifact / decoder["filename"], decoder.get("head_size")
    elif engine in ("ort", "ort_tensorrt"):
        graph = artifact / ONNX_MODEL
    else:
        raise ValueError(f"engine={engine!r}: no weight counting for it; known: torch, ort, ort_tensorrt, ort_genai")
    return onnx_weight_bytes(graph, rows_read), onnx_kv_geometry(graph, head_dim)


def _hf_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {folder}; pass an HF model folder")
    config: dict[str, Any] = json.loads(path.read_text())
    return config.get("text_config", config)


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(length))
    return header
