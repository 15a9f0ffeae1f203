"""The roofline's parts: bytes a decode step reads, counted on hand-made artifacts; the KV context of a
workload; the efficiency arithmetic; and a real copy benchmark giving a plausible bandwidth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

from autoopt.bench.roofline import (
    Bandwidth,
    KvGeometry,
    WeightBytes,
    artifact_weights_and_kv,
    hf_kv_geometry,
    mean_decode_context,
    measure_bandwidth,
    onnx_kv_geometry,
    onnx_weight_bytes,
    roofline,
    safetensors_weight_bytes,
)

VOCAB, HIDDEN, LAYERS, KV_HEADS, HEAD_DIM = 100, 8, 2, 2, 4


def _hf_folder(folder: Path, tied: bool) -> Path:
    tensors = {
        "model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), np.float32),
        "model.layers.0.mlp.up_proj.weight": np.zeros((16, HIDDEN), np.float16),
        "model.norm.weight": np.zeros((HIDDEN,), np.float32),
    }
    if not tied:
        tensors["lm_head.weight"] = np.zeros((VOCAB, HIDDEN), np.float32)
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    config = {
        "num_hidden_layers": LAYERS, "num_attention_heads": 4, "num_key_value_heads": KV_HEADS,
        "hidden_size": 16, "tie_word_embeddings": tied,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_safetensors_count_one_embedding_row_and_the_whole_lm_head(tmp_path: Path) -> None:
    weights = safetensors_weight_bytes(_hf_folder(tmp_path / "m", tied=False))

    row, table = HIDDEN * 4, VOCAB * HIDDEN * 4  # the fp16 up_proj is loaded as fp32, as every float
    assert weights.by_dtype == {"F32": row + table + HIDDEN * 4 + 16 * HIDDEN * 4}
    assert weights.skipped == table - row


def test_tied_embeddings_count_in_full_because_the_lm_head_reads_them(tmp_path: Path) -> None:
    weights = safetensors_weight_bytes(_hf_folder(tmp_path / "m", tied=True))

    assert weights.by_dtype["F32"] == VOCAB * HIDDEN * 4 + HIDDEN * 4 + 16 * HIDDEN * 4
    assert weights.skipped == 0


def test_torch_load_time_precision_is_what_a_step_reads(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "m", tied=False)

    bf16 = safetensors_weight_bytes(folder, quant="bf16")
    int8 = safetensors_weight_bytes(folder, quant="int8_dynamic")

    assert bf16.by_dtype == {"BF16": (HIDDEN + VOCAB * HIDDEN + HIDDEN + 16 * HIDDEN) * 2}
    # int8 Linear weights (up_proj, lm_head) plus one fp32 scale per output row; embedding and norm stay.
    assert int8.by_dtype == {"I8": 16 * HIDDEN + VOCAB * HIDDEN, "F32": 4 * (16 + VOCAB) + HIDDEN * 4 + HIDDEN * 4}


def test_int8_dynamic_tied_lm_head_reads_its_own_int8_copy_and_one_embedding_row(tmp_path: Path) -> None:
    # quantize_dynamic swaps every nn.Linear, the tied lm_head too, for an int8 copy; the fp32 table is then
    # only gathered from, exactly as in an untied model.
    tied = safetensors_weight_bytes(_hf_folder(tmp_path / "tied", tied=True), quant="int8_dynamic")
    untied = safetensors_weight_bytes(_hf_folder(tmp_path / "untied", tied=False), quant="int8_dynamic")

    assert tied == untied
    assert tied.skipped == (VOCAB - 1) * HIDDEN * 4


def test_hf_kv_geometry_follows_the_config_and_the_cast(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "m", tied=False)

    assert hf_kv_geometry(folder) == KvGeometry(LAYERS, KV_HEADS, HEAD_DIM, 4)
    assert hf_kv_geometry(folder, "bf16").dtype_bytes == 2


def _onnx_graph(path: Path, tied: bool, head_dim: int | str = HEAD_DIM) -> Path:
    """Gather(embedding) -> MatMulNBits(packed uint8 + fp32 scales) -> lm_head MatMul (or the tied table)."""
    embedding = numpy_helper.from_array(np.zeros((VOCAB, HIDDEN), np.float32), "embed")
    packed = numpy_helper.from_array(np.zeros((16, 1, 4), np.uint8), "w_q4")  # 16 rows x 8 int4 in 1 block
    scales = numpy_helper.from_array(np.zeros((16,), np.float32), "w_scales")
    lm_head = numpy_helper.from_array(np.zeros((16, VOCAB), np.float32), "lm_head")
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["h0"]),
        helper.make_node("MatMulNBits", ["h0", "w_q4", "w_scales"], ["h1"], domain="com.microsoft", K=8, N=16,
                         bits=4, block_size=8),
    ]  # fmt: skip
    initializers = [embedding, packed, scales]
    if tied:
        nodes += [
            helper.make_node("Transpose", ["embed"], ["embed_t"]),
            helper.make_node("MatMul", ["h0", "embed_t"], ["logits"]),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["h1", "lm_head"], ["logits"]))
        initializers.append(lm_head)
    past = [
        helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["b", KV_HEADS, "p", head_dim])
        for i in range(LAYERS)
        for kind in ("key", "value")
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]), *past],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        initializers,
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_counts_packed_int4_weights_scales_and_one_embedding_row(tmp_path: Path) -> None:
    weights = onnx_weight_bytes(_onnx_graph(tmp_path / "model.onnx", tied=False))

    row, table = HIDDEN * 4, VOCAB * HIDDEN * 4
    assert weights.by_dtype == {"FLOAT": row + 16 * 4 + 16 * VOCAB * 4, "UINT8": 16 * 4}
    assert weights.skipped == table - row


def test_onnx_table_also_read_as_the_lm_head_counts_in_full(tmp_path: Path) -> None:
    weights = onnx_weight_bytes(_onnx_graph(tmp_path / "model.onnx", tied=True))

    assert weights.by_dtype == {"FLOAT": VOCAB * HIDDEN * 4 + 16 * 4, "UINT8": 16 * 4}
    assert weights.skipped == 0


def test_onnx_kv_geometry_from_past_inputs_and_a_symbolic_head_dim(tmp_path: Path) -> None:
    fixed = _onnx_graph(tmp_path / "fixed.onnx", tied=False)
    symbolic = _onnx_graph(tmp_path / "symbolic.onnx", tied=False, head_dim="kv_cache_dim")

    assert onnx_kv_geometry(fixed) == KvGeometry(LAYERS, KV_HEADS, HEAD_DIM, 4)
    assert onnx_kv_geometry(symbolic, head_dim=HEAD_DIM) == KvGeometry(LAYERS, KV_HEADS, HEAD_DIM, 4)
    with pytest.raises(ValueError, match="kv_cache_dim"):
        onnx_kv_geometry(symbolic)


def test_genai_artifact_takes_its_graph_and_head_size_from_genai_config(tmp_path: Path) -> None:
    folder = tmp_path / "genai"
    folder.mkdir()
    _onnx_graph(folder / "decoder.onnx", tied=False, head_dim="kv_cache_dim")
    config = {"model": {"decoder": {"filename": "decoder.onnx", "head_size": HEAD_DIM}}}
    (folder / "genai_config.json").write_text(json.dumps(config))

    weights, kv = artifact_weights_and_kv("ort_genai", folder)

    assert weights.total > 0 and kv.head_dim == HEAD_DIM


def test_mean_decode_context_weights_requests_by_their_decode_steps() -> None:
    # prompt 128, 32 tokens: 31 decode steps attending over 129..159 positions.
    assert mean_decode_context([(128, 32)]) == pytest.approx(144.0)
    # (10, 3): steps over 11, 12; (20, 2): one step over 21 → (11 + 12 + 21) / 3
    assert mean_decode_context([(10, 3), (20, 2)]) == pytest.approx(44 / 3)
    with pytest.raises(ValueError, match="no decode step"):
        mean_decode_context([(10, 1)])


def test_efficiency_is_bytes_per_step_times_steps_per_second_over_bandwidth() -> None:
    weights = WeightBytes({"FLOAT": 900_000_000}, skipped=0)
    kv = KvGeometry(layers=1, kv_heads=1, head_dim=1, dtype_bytes=1)  # 2 bytes per position
    bandwidth = Bandwidth(10.0, (10.0,), 1, 1, llc_bytes=2**20, method="hand-made")

    result = roofline(weights, kv, mean_context=50_000_000, tpot_ms=200.0, bandwidth=bandwidth)

    assert result.bytes_per_step == pytest.approx(1e9)
    assert result.steps_per_s == pytest.approx(5.0)
    assert result.bound_steps_per_s == pytest.approx(10.0)
    assert result.efficiency == pytest.approx(0.5)
    assert result.fits_llc is False


@pytest.mark.parametrize(("llc", "tpot_ms", "note"), [
    (2**30, 1.0, "fits the last-level cache"),  # 1 MB a step in a 1 GiB cache: above 1 says nothing of DRAM
    (2**19, 0.05, "above the measured DRAM bound: part of each step's bytes may come from the caches, or it measured "
     "low"),  # efficiency 2
    (None, 0.05, "above the declared bandwidth: check its figure"),  # a GPU target's datasheet figure
    (2**19, 1.0, ""),  # larger than the cache, below the DRAM bound
])
def test_an_efficiency_above_one_or_a_cached_working_set_is_named_beside_the_figure(llc: int | None, tpot_ms: float,
                                                                                   note: str) -> None:
    weights = WeightBytes({"FLOAT": 1_000_000}, skipped=0)
    kv = KvGeometry(layers=1, kv_heads=1, head_dim=1, dtype_bytes=1)
    bandwidth = Bandwidth(10.0, (10.0,), 1, 1, llc_bytes=llc, method="hand-made")

    result = roofline(weights, kv, mean_context=0, tpot_ms=tpot_ms, bandwidth=bandwidth)

    assert result.note() == note


def test_copy_bandwidth_is_positive_plausible_and_best_of_its_samples() -> None:
    # A 64 MiB buffer keeps the test quick; the default (4x the last-level cache) is what measure uses.
    bandwidth = measure_bandwidth(buffer_bytes=64 * 2**20, repeats=3, threads=2)

    assert len(bandwidth.samples) == 3
    assert bandwidth.gb_per_s == max(bandwidth.samples)
    assert 0.5 < bandwidth.gb_per_s < 5_000  # GB/s: from a throttled VM to an HBM-class socket
    assert bandwidth.buffer_bytes == 64 * 2**20 and bandwidth.threads == 2
    assert "best of 3" in bandwidth.method
