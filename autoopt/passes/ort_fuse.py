"""Offline transformer fusions from `onnxruntime.transformers.optimizer`.

On Qwen2 exports this fuses RMSNorm (and the residual add before it) into
SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization; attention is never fused. Only the
Python fusions run here (opt_level 0): ORT's own graph optimizations stay a runtime knob. On fp16
exports nothing matches (RMSNorm sits between Cast nodes), and the pass fails rather than copy the graph.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
from onnxruntime.transformers.optimizer import optimize_model

from autoopt.passes.onnx_files import MODEL_FILE, copy_side_files, needs_external_data

FUSION_REPORT = "fusion.json"
# "gpt2" runs the generic fusions (norms, skip-norms, gelu) without model-specific rewrites.
_MODEL_TYPE = "gpt2"


def run_ort_fuse(src: Path, dst: Path, use_gpu: bool = False) -> None:
    config = json.loads((src / "config.json").read_text())
    before = _op_counts(onnx.load(src / MODEL_FILE, load_external_data=False))
    optimized = optimize_model(
        str(src / MODEL_FILE),
        model_type=_MODEL_TYPE,
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        opt_level=0,
        use_gpu=use_gpu,
    )
    after = _op_counts(optimized.model)
    fused = {op: n - before.get(op, 0) for op, n in sorted(after.items()) if n > before.get(op, 0)}
    if not fused:
        raise RuntimeError(
            f"ort_fuse fused nothing in {src / MODEL_FILE} (model_type={_MODEL_TYPE}); fp16 exports keep "
            "RMSNorm between Cast nodes, which these fusions do not match: use fuse=false with fp16 weights"
        )

    copy_side_files(src, dst)
    optimized.save_model_to_file(str(dst / MODEL_FILE), use_external_data_format=needs_external_data(src))
    report = {
        "model_type": _MODEL_TYPE,
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "fused": fused,
    }
    (dst / FUSION_REPORT).write_text(json.dumps(report, indent=2))


def _op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)
