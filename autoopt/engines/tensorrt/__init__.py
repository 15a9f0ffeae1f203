"""onnxruntime's TensorRT execution provider on the same decoder-with-past export as `ort`
(CUDA provider as the fallback for nodes TensorRT does not take)."""

from __future__ import annotations

from autoopt.engines.info import EngineInfo
from autoopt.engines.ort import plan

INFO = EngineInfo(
    name="tensorrt",
    engine_class="autoopt.engines.tensorrt.engine:TensorrtEngine",
    # TensorRT runs neither MatMulInteger (dynamic int8) nor MatMulNBits (int4): those would fall back.
    quants={"cuda": ("none", "fp16")},
    knobs=("quant", "graph_opt", "threads", "batch_size", "warmup"),
    kv_caches=("dynamic",),
    requires={"cuda": ("tensorrt", "tensorrt")},
    plan=plan,
    description="ORT TensorRT execution provider on the torch.onnx dynamo export; one optimization profile "
    "covering batch 1..max_batch and cache 0..max_length",
)
