from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from autoopt.passes.genai_build import (
    ALGO_ALIASES,
    builder_options,
    check_levers,
    promoted_layers,
    resolve_levers,
    run_genai_build,
)

DEFAULTS = {"algo": "default", "symmetric": True, "lm_head": "same", "embeddings": "fp32", "mixed_layers": "none"}
# int4 builds of the tiny model, by name (built once per module, on first use)
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "explicit_defaults": DEFAULTS,
    "lm_fp32": {"lm_head": "fp32"},
    "lm_int8": {"lm_head": "int8"},
    "emb_int4": {"embeddings": "int4"},
    "asym": {"symmetric": False},
    "rtn": {"algo": "rtn"},
    "k_quant": {"algo": "k_quant"},
    "mixed": {"mixed_layers": "int8"},
    "b128_acc1": {"block_size": 128, "accuracy_level": 1},
}


def _graph(folder: Path) -> onnx.GraphProto:
    return onnx.load(str(folder / "model.onnx"), load_external_data=False).graph


def _nbits(folder: Path) -> dict[str, dict[str, object]]:
    """MatMulNBits nodes by name: their attributes plus the weight input and whether zero points are fed."""
    nodes = {}
    for n in _graph(folder).node:
        if n.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            nodes[n.name] = {**attrs, "weight": n.input[1], "zp": len(n.input) > 3 and n.input[3] != ""}
    return nodes


def _ops(folder: Path, name_prefix: str) -> list[str]:
    return [n.op_type for n in _graph(folder).node if n.name.startswith(name_prefix)]


# --- refusals: no build needed ---------------------------------------------------------------


def test_default_levers_add_no_builder_option():
    assert builder_options(resolve_levers("int4", "cpu", **DEFAULTS)) == []
    assert builder_options(resolve_levers("int4", "cpu")) == []


def test_mixed_layers_follow_the_builders_llama_cpp_rule():
    assert promoted_layers(2) == [0]
    assert promoted_layers(4) == [0, 2]
    assert promoted_layers(24) == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]


def test_aliases_spell_out_to_the_same_levers_as_their_parts():
    for alias, (algo, lm_head, mixed) in ALGO_ALIASES.items():
        assert resolve_levers("int4", "cpu", algo=alias) == resolve_levers(
            "int4", "cpu", algo=algo, lm_head=lm_head, mixed_layers=mixed
        )


@pytest.mark.parametrize(
    ("precision", "settings", "named"),
    [
        ("fp32", {"algo": "k_quant"}, "algo"),
        ("fp32", {"lm_head": "fp32"}, "lm_head"),
        ("int4", {"algo": "hqq"}, "algo='hqq'"),
        ("int4", {"algo": "gptq"}, "algo='gptq'"),
        ("int4", {"algo": "k_quant_linear"}, "algo='k_quant_linear'"),
        ("int4", {"block_size": 48}, "block_size=48"),
        ("int4", {"accuracy_level": 5}, "accuracy_level=5"),
        ("int4", {"symmetric": "false"}, "symmetric='false'"),
        ("int4", {"algo": "k_quant", "symmetric": False}, "symmetric=False"),
        ("int4", {"lm_head": "int4"}, "lm_head='int4'"),
        ("int4", {"embeddings": "int8"}, "embeddings='int8'"),
        ("int4", {"embeddings": "int4", "algo": "rtn"}, "embeddings=int4"),
        ("int4", {"algo": "k_quant_last", "lm_head": "fp32"}, "lm_head=fp32"),
        ("int8", {"lm_head": "int8"}, "lm_head=int8"),
        ("int8", {"mixed_layers": "int8"}, "mixed_layers=int8"),
        ("int8", {"embeddings": "int4"}, "embeddings=int4"),
    ],
)
def test_settings_that_do_not_apply_are_refused_in_one_line(precision: str, settings: dict, named: str):
    with pytest.raises(ValueError) as error:
        resolve_levers(precision, "cpu", **settings)

    message = str(error.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("name", ["int4_block_size", "int4_is_symmetric", "exclude_lm_head", "exclude_embeds"])
def test_silently_ignored_builder_spellings_are_refused_before_any_build(name: str, tmp_path: Path):
    with pytest.raises(ValueError, match=f"{name}=.*refused") as error:
        run_genai_build(tmp_path / "absent", tmp_path / "out", precision="int4", execution_provider="cpu", **{name: 1})

    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


# --- builds on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def builds(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("levers")

    def build(name: str) -> Path:
        out = root / name
        if not (out / "model.onnx").exists():
            run_genai_build(tiny_model, out, precision="int4", execution_provider="cpu", **VARIANTS[name])
        return out

    return build


@pytest.mark.slow
def test_default_levers_build_the_same_graph_as_the_bare_builder(tiny_model: Path, builds, tmp_path: Path):
    bare = tmp_path / "bare"
    subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(tiny_model), "-o", str(bare),
         "-p", "int4", "-e", "cpu", "-c", str(tmp_path / "cache")],
        check=True, capture_output=True, env={**os.environ, "GIT_DIR": str(tmp_path / "no-repository")},
    )  # fmt: skip
    explicit = builds("explicit_defaults")

    for name in ("model.onnx", "model.onnx.data"):
        assert (explicit / name).read_bytes() == (bare / name).read_bytes()


@pytest.mark.slow
def test_the_build_does_not_change_with_the_commit_of_the_checkout_holding_the_venv(builds):
    """The builder stamps `git rev-parse HEAD` run beside its package: in a venv inside a checkout, the checkout's."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(onnx.__file__).parent, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the venv is not inside a git checkout here")
    stamped = onnx.load(str(builds("default") / "model.onnx"), load_external_data=False).producer_version
    assert head.stdout.strip()[:7] not in stamped


@pytest.mark.slow
def test_lm_head_levers_exclude_or_promote_only_the_lm_head(builds):
    same, fp32, int8 = builds("default"), builds("lm_fp32"), builds("lm_int8")

    assert "/lm_head/MatMul_Q4" in _nbits(same)
    assert _ops(fp32, "/lm_head/") == ["MatMul"] and len(_nbits(fp32)) == len(_nbits(same)) - 1
    assert _nbits(int8)["/lm_head/MatMul_Q8"]["bits"] == 8
    assert {n["bits"] for name, n in _nbits(int8).items() if "lm_head" not in name} == {4}


@pytest.mark.slow
def test_int4_embeddings_turn_the_gather_into_gatherblockquantized(builds):
    assert _ops(builds("default"), "/model/embed_tokens/") == ["Gather"]
    assert _ops(builds("emb_int4"), "/model/embed_tokens/") == ["GatherBlockQuantized"]


@pytest.mark.slow
def test_asymmetric_weights_get_zero_points_and_symmetric_ones_none(builds):
    assert not any(n["zp"] for n in _nbits(builds("default")).values())
    assert all(n["zp"] for n in _nbits(builds("asym")).values())


@pytest.mark.slow
def test_algos_write_their_own_quantizers_layout(builds):
    default, rtn, k_quant = builds("default"), builds("rtn"), builds("k_quant")

    assert all(n["weight"].endswith("_Q4") for n in _nbits(default).values())
    assert all(n["weight"].endswith("_Q4G32") and not n["zp"] for n in _nbits(rtn).values())
    assert all(n["weight"].endswith("_Q4G32") and n["zp"] for n in _nbits(k_quant).values())


@pytest.mark.slow
def test_mixed_layers_promote_some_body_matmuls_to_int8(builds):
    mixed = _nbits(builds("mixed"))

    promoted = {name for name, n in mixed.items() if n["bits"] == 8}
    # the tiny model has 2 layers; the builder's rule promotes layer 0's qkv and down projections
    assert promoted == {"/model/layers.0/attn/qkv_proj/MatMul_Q8", "/model/layers.0/mlp/down_proj/MatMul_Q8"}
    assert len(mixed) - len(promoted) == 9


@pytest.mark.slow
def test_block_size_and_accuracy_level_reach_every_matmulnbits(builds):
    nodes = _nbits(builds("b128_acc1"))

    assert {(n["block_size"], n["accuracy_level"]) for n in nodes.values()} == {(128, 1)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "asked",
    [
        {"lm_head": "fp32"},
        {"lm_head": "int8"},
        {"embeddings": "int4"},
        {"symmetric": False},
        {"algo": "rtn"},
        {"algo": "k_quant"},
        {"mixed_layers": "int8"},
        {"block_size": 64},
    ],
)
def test_the_graph_check_rejects_a_default_build_for_any_other_lever(builds, asked: dict):
    with pytest.raises(RuntimeError, match="does not show the requested levers"):
        check_levers(builds("default") / "model.onnx", resolve_levers("int4", "cpu", **asked))


@pytest.mark.slow
def test_lever_builds_load_and_change_the_logits(builds):
    from autoopt.config.schema import CandidateConfig
    from autoopt.engines.base import RuntimeOptions
    from autoopt.engines.ort_genai.engine import GenaiEngine

    runtime = RuntimeOptions(device="cpu", threads=2, max_length=32, max_batch=1)
    ids = np.random.default_rng(0).integers(0, 512, size=(1, 12), dtype=np.int64)
    logits = {}
    for name in ("default", "lm_fp32", "emb_int4"):
        engine = GenaiEngine.load(builds(name), CandidateConfig(engine="ort_genai", quant="int4"), runtime)
        logits[name] = engine.logits(ids)
        engine.close()

    assert all(np.isfinite(v).all() for v in logits.values())
    assert np.abs(logits["lm_fp32"] - logits["default"]).max() > 0
    assert np.abs(logits["emb_int4"] - logits["default"]).max() > 0


# --- a checkpoint with tied embeddings (Qwen2.5 up to 3B) ----------------------------------------


@pytest.mark.slow
def test_on_tied_embeddings_the_lookup_reads_the_int4_lm_heads_table_and_fp32_embeddings_are_refused(
    tied_model: Path, tiny_model: Path, tmp_path: Path
):
    from autoopt.config.schema import CandidateConfig
    from autoopt.models.source import ResolvedModel
    from autoopt.space.validity import tied_embeddings_problem

    assert ResolvedModel("tied", tied_model, "k").tied_embeddings
    assert not ResolvedModel("untied", tiny_model, "k").tied_embeddings
    run_genai_build(tied_model, tmp_path / "shared", precision="int4", execution_provider="cpu", embeddings="int4")
    run_genai_build(tied_model, tmp_path / "own", precision="int4", execution_provider="cpu", embeddings="int4",
                    lm_head="fp32")

    assert _ops(tmp_path / "shared", "/model/embed_tokens/") == ["Reshape", "GatherBlockQuantized"]
    assert _ops(tmp_path / "own", "/model/embed_tokens/") == ["GatherBlockQuantized"]
    assert _ops(tmp_path / "own", "/lm_head/") == ["MatMul"]
    with pytest.raises(RuntimeError, match="the checkpoint ties its embeddings, so embeddings=fp32 was ignored"):
        check_levers(tmp_path / "shared" / "model.onnx", resolve_levers("int4", "cpu"))
    refused = [tied_embeddings_problem(CandidateConfig(engine="ort_genai", quant="int4", **kw))
               for kw in ({}, {"quant_lm_head": "int8", "quant_embeddings": "int4"})]
    assert "quant_embeddings=fp32 would be ignored" in refused[0] and "quant_lm_head=int8" in refused[1]
    assert tied_embeddings_problem(CandidateConfig(engine="ort_genai", quant="int4", quant_embeddings="int4")) is None
