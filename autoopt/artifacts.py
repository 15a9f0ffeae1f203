"""File layouts of built artifacts, shared by the passes that write them and the engines that read them."""

from __future__ import annotations

ONNX_MODEL = "model.onnx"  # one decoder-with-past graph (plus `model.onnx.data` when large)
GENAI_CONFIG = "genai_config.json"  # onnxruntime-genai's own runtime configuration
ORT_SESSION = "ort_session.json"  # beside the graph: the session options and providers it was measured with
TORCH_RUNTIME = "torch_runtime.json"  # beside config.json: what transformers' own files cannot hold
TOKENIZER = "tokenizer.json"


def kv_names(num_layers: int, prefix: str) -> list[str]:
    """`{prefix}.{layer}.key|value` in the order the graph's inputs and outputs list them."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
