"""Shape models: a Qwen2 of a declared shape with seeded random weights, built once and cached, refused by
sweeps (accuracy on random weights means nothing) and accepted for speed measurements."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autoopt.config import ConfigError
from autoopt.config.load import check_model, load_measure_config, load_sweep_config
from autoopt.config.schema import ModelConfig, ModelShape
from autoopt.config.store import register
from autoopt.models.source import ModelTraits, model_traits
from tests.conftest import REPO

# A test-only shape: the fast suite never builds the 0.5B one (~2 GB in fp32).
TINY = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96, vocab_size=600,
                  tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=256, seed=0)


def _compose(config: str, *overrides: str):
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config, overrides=["workspace=/tmp/ws", "cache_dir=/tmp/cache", *overrides])


def _safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


def test_sweep_refuses_a_shape_model_in_one_line_pointing_at_speed_work() -> None:
    cfg = _compose("config", "model=qwen2_0_5b_shape")

    with pytest.raises(ConfigError) as err:
        load_sweep_config(cfg)

    message = str(err.value)
    assert "\n" not in message
    assert "random weights" in message and "shape models are for speed work" in message
    assert "python -m autoopt.measure model=qwen2_0_5b_shape" in message and "gpu_decode_bench.py" in message
    assert "model=builtin" in message


def test_measure_accepts_the_0_5b_shape_as_declared() -> None:
    m = load_measure_config(_compose("measure", "model=qwen2_0_5b_shape"))

    assert m.model.kind == "shape" and m.model.name == "qwen2_0_5b_shape"
    assert m.model.shape == ModelShape(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                                       rope_theta=1e6, max_position_embeddings=131072, seed=0)
    assert model_traits(m.model) == ModelTraits("Qwen2ForCausalLM", tied_embeddings=True)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (None, "model.shape is required for model.kind=shape"),
        (replace(TINY, num_layers=0), "model.shape.num_layers=0 must be >= 1"),
        (replace(TINY, num_kv_heads=3), "num_kv_heads must divide num_heads"),
        (replace(TINY, rope_theta=0.0), "model.shape.rope_theta=0.0 must be > 0"),
        (replace(TINY, hidden_size=12, num_heads=4, num_kv_heads=2), "head_dim 3, which must be even"),
    ],
)
def test_an_impossible_shape_fails_at_start_up_naming_the_key(shape: ModelShape | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_model(ModelConfig(name="s", kind="shape", shape=shape))


@pytest.mark.slow
def test_the_0_5b_shape_has_qwen2_0_5b_parameter_count() -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    from autoopt.models.train import qwen2_config

    shape = load_measure_config(_compose("measure", "model=qwen2_0_5b_shape")).model.shape
    assert shape is not None
    with torch.device("meta"):  # no memory: only the parameter shapes
        model = Qwen2ForCausalLM(qwen2_config(shape, eos_token_id=0))

    params = sum(p.numel() for p in model.parameters())
    embedding = 151936 * 896
    # Qwen2-0.5B's model card: 0.49B parameters, 0.36B of them outside the (tied) embedding.
    assert params == 494_032_768
    assert round((params - embedding) / 1e9, 2) == 0.36


@pytest.mark.slow
def test_shape_model_builds_deterministically_with_the_declared_shape(tmp_path: Path) -> None:
    from autoopt.digest import sha256_file
    from autoopt.models.shape import ACCURACY_NOTE, ensure_shape_model

    first = ensure_shape_model(TINY, tmp_path / "a")
    second = ensure_shape_model(TINY, tmp_path / "b")

    assert first.name == second.name and first.name.startswith("shape-")
    assert sha256_file(first / "model.safetensors") == sha256_file(second / "model.safetensors")
    config = json.loads((first / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert (config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == (2, 96, 600)
    rope_theta = config.get("rope_parameters", config).get("rope_theta")  # transformers 5 nests it
    assert config["tie_word_embeddings"] is True and rope_theta == 1e6
    shapes = _safetensors_shapes(first)
    assert shapes["model.embed_tokens.weight"] == [600, 64]
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == [2 * 16, 64]
    assert "lm_head.weight" not in shapes  # tied
    assert not any(name.startswith("model.layers.2.") for name in shapes)
    tokenizer = json.loads((first / "tokenizer.json").read_text())
    assert max(tokenizer["model"]["vocab"].values()) < 600
    assert json.loads((first / "autoopt_model.json").read_text())["accuracy"] == ACCURACY_NOTE


@pytest.mark.slow
def test_another_seed_is_another_model_and_a_cached_one_is_reused(tmp_path: Path) -> None:
    from autoopt.digest import sha256_file
    from autoopt.models.source import resolve_model

    model = ModelConfig(name="tiny-shape", kind="shape", shape=TINY)
    first = resolve_model(model, tmp_path)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_model(model, tmp_path)
    other = resolve_model(replace(model, shape=replace(TINY, seed=1)), tmp_path)

    assert again.path == first.path and (again.path / "model.safetensors").stat().st_mtime_ns == stamp
    assert other.key != first.key
    assert sha256_file(other.path / "model.safetensors") != sha256_file(first.path / "model.safetensors")
    assert first.describe()["kind"] == "shape" and "not meaningful" in str(first.describe()["accuracy"])


@pytest.mark.slow
def test_sweep_cli_on_a_shape_model_exits_2_before_any_work() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "autoopt", "model=qwen2_0_5b_shape"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)

    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: model=qwen2_0_5b_shape has random weights")
