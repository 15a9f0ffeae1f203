"""The `graph_opt` knob's values as ONNX Runtime names them (`GraphOptimizationLevel` members, which
onnxruntime-genai's session options take as strings)."""

from __future__ import annotations

ORT_GRAPH_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
