from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from autoopt.artifacts import ONNX_MODEL as MODEL_FILE
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.ort.engine import OrtEngine
from autoopt.engines.ort_tensorrt.engine import TensorrtEngine, _profile_options
from autoopt.passes.onnx_export import run_onnx_export
from autoopt.passes.ort_fuse import FUSION_REPORT
from autoopt.passes.ort_quant import run_ort_weight_only
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan

CPU = RuntimeOptions(device="cpu", threads=2, max_length=64, max_batch=4)
CUDA = RuntimeOptions(device="cuda", threads=2, max_length=64, max_batch=4)
PROMPT_LEN, NEW_TOKENS = 9, 6
Builder = Callable[[CandidateConfig], Path]


def _candidate(**fields: object) -> CandidateConfig:
    return CandidateConfig(engine="ort", **fields)


def _ops(artifact: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(artifact / MODEL_FILE).graph.node)


def _tokens(engine: OrtEngine, ids: np.ndarray) -> np.ndarray:
    return np.stack(list(engine.generate(ids, NEW_TOKENS)), axis=1)


@pytest.fixture(scope="module")
def build(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """Builds a candidate through the cached pipeline: every variant reuses the one export."""
    cache = tmp_path_factory.mktemp("cache")

    def _build(candidate: CandidateConfig) -> Path:
        return run_pipeline(tiny_model, "tiny", plan(candidate, "cpu"), cache).artifact

    return _build


@pytest.fixture(scope="module")
def fp32(build: Builder) -> Path:
    return build(_candidate())


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference(hf: transformers.PreTrainedModel, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HF fp32 teacher-forced logits and greedy tokens (EOS not allowed to stop it) for `ids`."""
    prompt = torch.from_numpy(ids)
    with torch.no_grad():
        logits = hf(prompt).logits.numpy()
        out = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return logits, out[:, PROMPT_LEN:].numpy()


@pytest.fixture(scope="module")
def ids(hf: transformers.PreTrainedModel) -> np.ndarray:
    return np.random.default_rng(0).integers(0, hf.config.vocab_size, size=(2, PROMPT_LEN), dtype=np.int64)


def test_plan_puts_block_options_only_in_the_weight_only_step():
    fp32_steps = plan(_candidate(quant_block_size=64), "cpu")
    int4_steps = plan(
        _candidate(quant="int4", quant_block_size=64, quant_accuracy_level=1, fuse=True), "cpu"
    )

    assert [(s.name, s.settings) for s in fp32_steps] == [("onnx_export", {"device": "cpu", "dtype": "fp32"})]
    assert [s.name for s in int4_steps] == ["onnx_export", "ort_fuse", "ort_weight_only"]
    assert int4_steps[-1].settings == {"bits": 4, "block_size": 64, "accuracy_level": 1, "symmetric": True}


def test_plan_exports_fp16_on_cuda_for_fp16_and_int4():
    fp16_export = plan(_candidate(quant="fp16"), "cuda")[0]
    int4_export = plan(_candidate(quant="int4"), "cuda")[0]

    assert fp16_export.settings == int4_export.settings == {"device": "cuda", "dtype": "fp16"}


def test_fp32_logits_match_torch(fp32: Path, ids: np.ndarray, reference: tuple[np.ndarray, np.ndarray]):
    engine = OrtEngine.load(fp32, _candidate(), CPU)

    logits = engine.logits(ids)

    assert logits.dtype == np.float32
    assert logits.shape == reference[0].shape
    np.testing.assert_allclose(logits, reference[0], rtol=0, atol=1e-4)


def test_greedy_tokens_match_hf_generate(
    fp32: Path, ids: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
):
    engine = OrtEngine.load(fp32, _candidate(), CPU)

    steps = list(engine.generate(ids, NEW_TOKENS))

    assert all(s.dtype == np.int64 and s.shape == (2,) for s in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), reference[1])


def test_io_bound_steps_used_on_devices_give_the_same_tokens(
    fp32: Path, ids: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
):
    engine = OrtEngine(ort.InferenceSession(fp32 / MODEL_FILE), "cpu", bind_io=True, rope="not under test")

    np.testing.assert_array_equal(_tokens(engine, ids), reference[1])
    np.testing.assert_allclose(engine.logits(ids), reference[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_graph_opt_level_gives_the_fp32_tokens(
    level: str, fp32: Path, ids: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
):
    engine = OrtEngine.load(fp32, _candidate(graph_opt=level), CPU)

    np.testing.assert_array_equal(_tokens(engine, ids), reference[1])


def test_unknown_graph_opt_level_is_refused_by_name(fp32: Path):
    with pytest.raises(ValueError, match="graph_opt='fast'.*disable, basic, extended, all"):
        OrtEngine.load(fp32, _candidate(graph_opt="fast"), CPU)


def test_fuse_replaces_rmsnorms_and_keeps_logits(build: Builder, fp32: Path, ids: np.ndarray):
    fused = build(_candidate(fuse=True))

    report = json.loads((fused / FUSION_REPORT).read_text())
    fused_logits = OrtEngine.load(fused, _candidate(fuse=True), CPU).logits(ids)
    plain_logits = OrtEngine.load(fp32, _candidate(), CPU).logits(ids)

    # 2 layers x 2 norms + the final norm; all but the first follow a residual add
    assert report["fused"] == {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 4}
    assert report["nodes_after"] < report["nodes_before"]
    assert _ops(fused)["ReduceMean"] == 0
    np.testing.assert_allclose(fused_logits, plain_logits, rtol=0, atol=1e-4)


def test_int4_graph_has_matmulnbits_with_requested_options_and_changes_logits(
    build: Builder, fp32: Path, ids: np.ndarray
):
    candidate = _candidate(quant="int4", quant_block_size=16, quant_accuracy_level=1)
    int4 = build(candidate)

    nodes = [n for n in onnx.load(int4 / MODEL_FILE).graph.node if n.op_type == "MatMulNBits"]
    attrs = {(a.name, onnx.helper.get_attribute_value(a)) for n in nodes for a in n.attribute}
    logits = OrtEngine.load(int4, candidate, CPU).logits(ids)
    plain = OrtEngine.load(fp32, _candidate(), CPU).logits(ids)

    assert len(nodes) == 2 * 7 + 1  # q k v o gate up down per layer, and lm_head
    assert {("bits", 4), ("block_size", 16), ("accuracy_level", 1)} <= attrs
    assert logits.shape == plain.shape
    assert not np.array_equal(logits, plain)
    assert np.abs(logits - plain).max() < 1.0


def test_int8_dynamic_graph_has_integer_matmuls_and_changes_logits(
    build: Builder, fp32: Path, ids: np.ndarray
):
    int8 = build(_candidate(quant="int8_dynamic"))

    ops = _ops(int8)
    logits = OrtEngine.load(int8, _candidate(quant="int8_dynamic"), CPU).logits(ids)
    plain = OrtEngine.load(fp32, _candidate(), CPU).logits(ids)

    assert ops["MatMulInteger"] == 2 * 7 + 1
    assert ops["DynamicQuantizeLinear"] > 0
    assert logits.shape == plain.shape
    assert not np.array_equal(logits, plain)
    assert np.abs(logits - plain).max() < 1.0


def test_int8_weight_only_generates_batch_rows_like_single_runs(build: Builder, ids: np.ndarray):
    candidate = _candidate(quant="int8_weight")
    engine = OrtEngine.load(build(candidate), candidate, CPU)

    batched = _tokens(engine, ids)
    rows = np.concatenate([_tokens(engine, ids[i : i + 1]) for i in range(len(ids))])

    np.testing.assert_array_equal(batched, rows)


def test_weight_only_refuses_a_block_size_matmulnbits_cannot_take(fp32: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="block_size=24"):
        run_ort_weight_only(fp32, tmp_path, bits=4, block_size=24)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="a CUDA provider is present"
)
def test_cuda_device_is_refused_with_the_install_hint(fp32: Path):
    with pytest.raises(
        RuntimeError, match=r"engine ort on device cuda needs onnxruntime-gpu .*found providers: .*CPU"
    ):
        OrtEngine.load(fp32, _candidate(), CUDA)


@pytest.mark.skipif(
    "TensorrtExecutionProvider" in ort.get_available_providers(), reason="TensorRT is present"
)
def test_tensorrt_is_refused_without_its_provider(fp32: Path):
    with pytest.raises(
        RuntimeError, match="engine ort_tensorrt on device cuda needs onnxruntime-gpu with TensorRT"
    ):
        TensorrtEngine.load(fp32, CandidateConfig(engine="ort_tensorrt"), CUDA)


def test_tensorrt_profile_spans_empty_to_longest_cache(fp32: Path):
    options = _profile_options(fp32, CUDA)

    assert "past_key_values.0.key:1x2x0x16" in options["trt_profile_min_shapes"].split(",")
    assert "past_key_values.1.value:4x2x64x16" in options["trt_profile_max_shapes"].split(",")
    assert "input_ids:4x1" in options["trt_profile_opt_shapes"].split(",")


@pytest.mark.slow
def test_fp16_export_keeps_an_fp16_cache_and_stays_close_to_fp32(
    tiny_model: Path, tmp_path: Path, ids: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
):
    run_onnx_export(tiny_model, tmp_path, device="cpu", dtype="fp16")

    engine = OrtEngine.load(tmp_path, _candidate(quant="fp16"), CPU)
    logits = engine.logits(ids)

    past_types = {i.type.tensor_type.elem_type for i in onnx.load(tmp_path / MODEL_FILE).graph.input[2:]}
    assert past_types == {onnx.TensorProto.FLOAT16}
    assert logits.dtype == np.float32
    assert np.abs(logits - reference[0]).max() < 1e-2
    assert len(list(engine.generate(ids, 3))) == 3
