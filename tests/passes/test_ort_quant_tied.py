"""ONNX Runtime quantization of a checkpoint with tied embeddings: the export reads the lm_head's weight through a
Transpose of the embedding table, which the quantizers skipped, leaving the largest matrix in float under an
'int4' or 'int8' label. The passes now quantize it like every other weight, and fail if any MatMul weight is
left in float."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from autoopt.passes.onnx_export import run_onnx_export
from autoopt.passes.onnx_files import weights_as_initializers
from autoopt.passes.ort_quant import _verify_no_float_weights_left, run_ort_int8_dynamic, run_ort_weight_only
from autoopt.passes.ort_static import calibration_settings, run_ort_int8_static


@pytest.fixture(scope="module")
def exported(tied_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tied_onnx")
    run_onnx_export(tied_model, out)
    return out


def _ops(folder: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(folder / "model.onnx", load_external_data=False).graph.node)


@pytest.mark.slow
def test_every_matmul_weight_of_a_tied_checkpoint_is_quantized(exported: Path, tmp_path: Path) -> None:
    layers = 2  # tiny_random_model's; 7 projections each, plus the lm_head
    for name, run, op in (("w4", lambda d: run_ort_weight_only(exported, d, bits=4), "MatMulNBits"),
                          ("w8", lambda d: run_ort_weight_only(exported, d, bits=8), "MatMulNBits"),
                          ("dyn", lambda d: run_ort_int8_dynamic(exported, d), "MatMulInteger")):
        (tmp_path / name).mkdir()
        run(tmp_path / name)
        assert _ops(tmp_path / name)[op] == 7 * layers + 1, name


@pytest.mark.slow
def test_static_int8_quantizes_a_tied_lm_head_as_a_weight_not_as_an_activation(exported: Path, tmp_path: Path) -> None:
    """quantize_static took the Transpose of the table for an activation: uint8, one scale, requantized every call."""
    run_ort_int8_static(exported, tmp_path, samples=4, window=32, **calibration_settings())

    graph = onnx.load(tmp_path / "model.onnx", load_external_data=False).graph
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    producers = {o: n for n in graph.node for o in n.output}
    weights = [n for n in graph.node if n.op_type == "MatMul"
               and any(producers[i].op_type == "DequantizeLinear" and producers[i].input[0] in int8 for i in n.input)]
    assert len(weights) == 7 * 2 + 1  # tiny_random_model's 2 layers of 7 projections, and the lm_head


@pytest.mark.slow
def test_untying_the_lm_head_weight_leaves_the_logits_as_they_were(exported: Path, tmp_path: Path) -> None:
    untied = weights_as_initializers(exported, tmp_path)
    assert untied != exported / "model.onnx"
    session = ort.InferenceSession(str(exported / "model.onnx"))
    feeds = {"input_ids": np.array([[5, 17, 42]], dtype=np.int64), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    for i in session.get_inputs():
        if i.name.startswith("past"):  # (batch, kv heads, past length, head dim): an empty cache
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    before = session.run(["logits"], feeds)[0]
    after = ort.InferenceSession(str(untied)).run(["logits"], feeds)[0]
    assert np.array_equal(before, after)


def test_a_float_weight_read_through_a_transpose_or_cast_is_caught() -> None:
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    nodes = [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("Cast", ["wt"], ["wc"], to=1),
             helper.make_node("MatMul", ["x", "wc"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])], [weight])

    with pytest.raises(RuntimeError, match="left 1 MatMul weight"):
        _verify_no_float_weights_left(graph, "pass")


def _graph_file(folder: Path, nodes: list, outputs: list[str]) -> Path:
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3])],
                              [helper.make_tensor_value_info(o, 1, None) for o in outputs], [weight])
    folder.mkdir()
    onnx.save(helper.make_model(graph), folder / "model.onnx")
    return folder


@pytest.mark.parametrize("transpose_is_an_output", [False, True])
def test_untying_makes_one_copy_per_shared_weight_and_keeps_a_transpose_still_read(
    transpose_is_an_output: bool, tmp_path: Path
) -> None:
    from onnx import helper

    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y1"]), helper.make_node("MatMul", ["x", "wt"], ["y2"])]
    src = _graph_file(tmp_path / "src", nodes, ["y1", "y2", *(["wt"] if transpose_is_an_output else [])])

    graph = onnx.load(weights_as_initializers(src, tmp_path)).graph

    assert [n.input[1] for n in graph.node if n.op_type == "MatMul"] == ["w.transposed"] * 2
    assert sorted(i.name for i in graph.initializer) == ["w", "w.transposed"]
    assert sum(n.op_type == "Transpose" for n in graph.node) == int(transpose_is_an_output)
    copy = next(i for i in graph.initializer if i.name == "w.transposed")
    np.testing.assert_array_equal(numpy_helper.to_array(copy), np.arange(12, dtype=np.float32).reshape(4, 3).T)


def test_a_transpose_that_is_not_a_2d_swap_is_left_alone(tmp_path: Path) -> None:
    from onnx import helper

    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[0, 1]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    src = _graph_file(tmp_path / "src", nodes, ["y"])
    assert weights_as_initializers(src, tmp_path) == src / "model.onnx"
