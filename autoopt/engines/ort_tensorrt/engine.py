"""The `ort` engine with TensorRT as the execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import onnx

from autoopt.artifacts import ONNX_MODEL as MODEL_FILE
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.info import autoopt_install
from autoopt.engines.ort.engine import OrtEngine
from autoopt.engines.probes import CPU_BUILDS_OUT


class TensorrtEngine(OrtEngine):
    name = "ort_tensorrt"
    install_hint: ClassVar[str] = f"onnxruntime-gpu with TensorRT ({CPU_BUILDS_OUT}, then {autoopt_install('gpu,tensorrt')})"

    @classmethod
    def providers(cls, artifact: Path, runtime: RuntimeOptions) -> list[str | tuple[str, dict[str, str]]]:
        if runtime.device != "cuda":
            raise RuntimeError(f"engine ort_tensorrt runs on device cuda only, not {runtime.device}")
        cls._require_provider("TensorrtExecutionProvider", runtime.device)
        cls._require_provider("CUDAExecutionProvider", runtime.device)
        return [("TensorrtExecutionProvider", _profile_options(artifact, runtime)), "CUDAExecutionProvider"]


def _profile_options(artifact: Path, runtime: RuntimeOptions) -> dict[str, str]:
    """One optimization profile over every shape the engine is asked for, so that TensorRT builds its
    engine once at load instead of again whenever the cache grows past the shapes seen so far."""
    graph = onnx.load(artifact / MODEL_FILE, load_external_data=False).graph
    longest, batch = runtime.max_length, runtime.max_batch
    lengths = {  # (min, opt, max) of the sequence-like axis of each input
        "input_ids": (1, 1, longest),
        "attention_mask": (1, longest // 2 + 1, longest),
        "past": (0, longest // 2, longest),
    }
    profiles: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for value in graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        kind = "past" if value.name.startswith("past_key_values.") else value.name
        axis = 2 if kind == "past" else 1
        for i, level in enumerate(profiles):
            dims[0] = 1 if level == "min" else batch
            dims[axis] = lengths[kind][i]
            profiles[level].append(f"{value.name}:{'x'.join(map(str, dims))}")
    return {f"trt_profile_{level}_shapes": ",".join(entries) for level, entries in profiles.items()}
