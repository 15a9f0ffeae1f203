"""The roofline on device targets: the bandwidth a cuda target declares (validated at start-up), and the bytes
torch_compiled's weight-only int8/int4 hold, counted on hand-made folders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from safetensors.numpy import save_file

from autoopt.bench.roofline import (
    KvGeometry,
    artifact_weights_and_kv,
    declared_bandwidth,
    roofline,
    target_bandwidth,
    weight_only_bytes,
)
from autoopt.config import ConfigError
from autoopt.config.load import check_target, load_measure_config
from autoopt.config.schema import TargetConfig
from autoopt.config.store import register
from tests.conftest import REPO

GPU = TargetConfig(name="card", device="cuda", precisions=["fp32", "bf16"], engines=["torch"], memory_gb=80,
                   price_per_hour=2.0, price_source="test", memory_bandwidth_gbps=3350.0,
                   bandwidth_source="a datasheet")
VOCAB, HIDDEN, UP, KV_OUT = 64, 32, 48, 12  # KV_OUT: 12 output rows, not a multiple of tinygemm's 8


def _folder(path: Path, tied: bool) -> Path:
    tensors = {
        "model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), np.float32),
        "model.layers.0.mlp.up_proj.weight": np.zeros((UP, HIDDEN), np.float32),
        "model.layers.0.self_attn.k_proj.weight": np.zeros((KV_OUT, HIDDEN), np.float32),
        "model.layers.0.self_attn.k_proj.bias": np.zeros((KV_OUT,), np.float32),
        "model.norm.weight": np.zeros((HIDDEN,), np.float32),
    }
    if not tied:
        tensors["lm_head.weight"] = np.zeros((VOCAB, HIDDEN), np.float32)
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    config = {"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1, "hidden_size": HIDDEN,
              "tie_word_embeddings": tied}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_gpu_targets_declare_their_bandwidth_and_its_source() -> None:
    register()
    for name, expected in (("t4", 320.0), ("a100", 1555.0)):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("measure", overrides=["workspace=/tmp/ws", "cache_dir=/tmp/cache", f"target={name}"])

        target = load_measure_config(cfg).target

        assert target.memory_bandwidth_gbps == expected
        assert "datasheet" in target.bandwidth_source and "not checked" in target.bandwidth_source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory_bandwidth_gbps": -1.0}, "target.memory_bandwidth_gbps=-1.0 must be >= 0"),
        ({"memory_bandwidth_gbps": 0.0}, "target.memory_bandwidth_gbps is 0 on cuda target=card"),
        ({"bandwidth_source": " "}, "target.bandwidth_source is empty"),
    ],
)
def test_a_bad_bandwidth_fails_at_start_up_in_one_line_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_target(replace(GPU, **change))

    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_cpu_target_may_leave_the_bandwidth_to_be_measured() -> None:
    check_target(replace(GPU, device="cpu", memory_bandwidth_gbps=0.0, bandwidth_source=""))


def test_a_cuda_target_runs_its_roofline_on_the_declared_bandwidth() -> None:
    bandwidth = target_bandwidth(GPU)

    assert bandwidth is not None
    assert bandwidth.gb_per_s == 3350.0 and bandwidth.samples == (3350.0,)
    assert bandwidth.method == "declared, not measured: a datasheet"
    assert bandwidth.llc_bytes is None
    assert target_bandwidth(replace(GPU, memory_bandwidth_gbps=0.0)) is None  # refused at start-up anyway


def test_efficiency_against_a_declared_bandwidth_has_no_cache_verdict() -> None:
    from autoopt.bench.roofline import WeightBytes

    weights = WeightBytes({"BF16": 1_000_000_000}, skipped=0)
    kv = KvGeometry(layers=1, kv_heads=1, head_dim=1, dtype_bytes=2)

    result = roofline(weights, kv, mean_context=0, tpot_ms=1.0, bandwidth=declared_bandwidth(2000.0, "sheet"))

    assert result.bound_steps_per_s == pytest.approx(2000.0)
    assert result.efficiency == pytest.approx(0.5)
    assert result.fits_llc is None
    with pytest.raises(ValueError, match="must be > 0"):
        declared_bandwidth(0.0, "sheet")


def test_int8_weight_holds_int8_linears_with_a_bf16_scale_per_row(tmp_path: Path) -> None:
    weights = weight_only_bytes(_folder(tmp_path / "m", tied=False), "int8_weight")

    linear_rows = UP + KV_OUT + VOCAB  # up_proj, k_proj, lm_head
    assert weights.by_dtype["I8"] == linear_rows * HIDDEN
    # scales, one embedding row, the k_proj bias and the norm, all bf16
    assert weights.by_dtype["BF16"] == 2 * (linear_rows + HIDDEN + KV_OUT + HIDDEN)
    assert weights.skipped == 2 * HIDDEN * (VOCAB - 1)


def test_int4_packs_two_per_byte_with_group_scales_and_keeps_lm_head_int8(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", tied=True)

    cpu = weight_only_bytes(folder, "int4", group_size=16)
    cuda = weight_only_bytes(folder, "int4", group_size=16, device="cuda")

    groups = HIDDEN // 16
    # cpu: up_proj and k_proj int4; the tied table's own int8 lm_head copy.
    assert cpu.by_dtype["INT4"] == (UP + KV_OUT) * HIDDEN // 2
    assert cpu.by_dtype["I8"] == VOCAB * HIDDEN
    assert cpu.by_dtype["BF16"] == 2 * (2 * (UP + KV_OUT) * groups + VOCAB + HIDDEN + KV_OUT + HIDDEN)
    # cuda's tinygemm needs N % 8 == 0: k_proj (12 rows) stays int8 there.
    assert cuda.by_dtype["INT4"] == UP * HIDDEN // 2
    assert cuda.by_dtype["I8"] == (VOCAB + KV_OUT) * HIDDEN


def test_torch_compiled_artifacts_count_their_load_time_precision(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", tied=False)

    int8, kv = artifact_weights_and_kv("torch_compiled", folder, "int8_weight")
    fp16, fp16_kv = artifact_weights_and_kv("torch_compiled", folder, "fp16")

    assert "I8" in int8.by_dtype and kv.dtype_bytes == 2  # bf16 activations, bf16 cache
    assert set(fp16.by_dtype) == {"F16"} and fp16_kv.dtype_bytes == 2
    with pytest.raises(ValueError, match="pass group_size"):  # the measure job then reports no roofline
        artifact_weights_and_kv("torch_compiled", folder, "int4")


def test_fp8_holds_float8_linears_with_an_fp32_scale_per_row_and_keeps_unaligned_ones_bf16(tmp_path: Path) -> None:
    weights = weight_only_bytes(_folder(tmp_path / "m", tied=False), "fp8")

    aligned = UP + VOCAB  # up_proj and lm_head; k_proj's 12 rows are not a multiple of 16
    assert weights.by_dtype["F8_E4M3"] == aligned * HIDDEN
    assert weights.by_dtype["F32"] == 4 * aligned
    assert weights.by_dtype["BF16"] == 2 * (KV_OUT * HIDDEN + HIDDEN + KV_OUT + HIDDEN)
