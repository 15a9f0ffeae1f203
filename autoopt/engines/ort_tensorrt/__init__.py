"""ONNX Runtime's TensorRT execution provider (not standalone TensorRT) on the same decoder-with-past
export as `ort`, with the CUDA provider as the fallback for nodes TensorRT does not take."""

from __future__ import annotations

from functools import partial

from autoopt.engines.info import EngineInfo, Requirement
from autoopt.engines.probes import ort_provider

INFO = EngineInfo(
    name="ort_tensorrt",
    samples=True,  # ort's generate and its host logits
    engine_class="autoopt.engines.ort_tensorrt.engine:TensorrtEngine",
    # TensorRT runs neither MatMulInteger (dynamic int8) nor MatMulNBits (int4): those would fall back.
    quants={"cuda": ("none", "fp16")},
    requires={
        "cuda": (
            Requirement("tensorrt", "tensorrt"),
            Requirement(
                "onnxruntime", "gpu", probe=partial(ort_provider, "TensorrtExecutionProvider", "gpu,tensorrt")
            ),
        ),
    },
    description="ONNX Runtime's TensorRT execution provider on the torch.onnx dynamo export; one optimization "
    "profile covering batch 1..max_batch and cache 0..max_length",
)
