"""The recipe of each engine's artifact: which passes, with which settings, turn the model folder into
what the engine loads. Settings come from the candidate's build knobs; runtime knobs never enter here,
so candidates that differ only at run time share one build."""

from __future__ import annotations

from collections.abc import Callable

from autoopt.config.schema import CandidateConfig
from autoopt.passes.ort_static import calibration_settings
from autoopt.passes.registry import PassStep

# Candidate quant -> the genai builder's `-p`.
GENAI_PRECISION = {"none": "fp32", "fp16": "fp16", "bf16": "bf16", "int8_weight": "int8", "int4": "int4"}


def plan(candidate: CandidateConfig, device: str) -> list[PassStep]:
    """The build steps of `candidate` for `device` (an empty list: the engine loads the model folder)."""
    return _PLANS[candidate.engine](candidate, device)


def _torch(candidate: CandidateConfig, device: str) -> list[PassStep]:
    return []  # eager transformers quantizes or casts at load time


def _ort(candidate: CandidateConfig, device: str) -> list[PassStep]:
    """export (fp16 on cuda for fp16 and int4) -> optional fusions -> the quantization pass."""
    quant = candidate.quant
    half = device == "cuda" and quant in ("fp16", "int4")
    steps = [PassStep("onnx_export", {"device": "cuda" if half else "cpu", "dtype": "fp16" if half else "fp32"})]
    if candidate.fuse:
        steps.append(PassStep("ort_fuse", {"use_gpu": device == "cuda"}))
    if quant == "int8_dynamic":
        steps.append(PassStep("ort_int8_dynamic", {"per_channel": True}))
    elif quant == "int8_static":
        settings = {"method": candidate.calib_method, "samples": candidate.calib_samples, **calibration_settings()}
        steps.append(PassStep("ort_int8_static", settings))
    elif quant in ("int4", "int8_weight"):
        settings = {
            "bits": 4 if quant == "int4" else 8,
            "block_size": candidate.quant_block_size,
            "accuracy_level": candidate.quant_accuracy_level,
            "symmetric": True,
        }
        steps.append(PassStep("ort_weight_only", settings))
    return steps


def _genai(candidate: CandidateConfig, device: str) -> list[PassStep]:
    settings: dict[str, object] = {"precision": GENAI_PRECISION[candidate.quant], "execution_provider": device}
    if candidate.quant in ("int4", "int8_weight"):
        # MatMulNBits takes the same block size and compute type at 8 bits as at 4.
        settings["block_size"] = candidate.quant_block_size
        settings["accuracy_level"] = candidate.quant_accuracy_level
    if candidate.quant == "int4":
        # Only levers away from their defaults enter the settings, so default builds keep their cache keys.
        for knob, setting in GENAI_LEVERS.items():
            value = getattr(candidate, knob)
            if value != getattr(_DEFAULTS, knob):
                settings[setting] = value
    return [PassStep("genai_build", settings)]


GENAI_LEVERS = {  # candidate knob -> genai_build setting
    "quant_algo": "algo",
    "quant_symmetric": "symmetric",
    "quant_lm_head": "lm_head",
    "quant_embeddings": "embeddings",
    "quant_mixed_layers": "mixed_layers",
}
_DEFAULTS = CandidateConfig()


_PLANS: dict[str, Callable[[CandidateConfig, str], list[PassStep]]] = {
    "torch": _torch,
    "ort": _ort,
    "ort_genai": _genai,
    "ort_tensorrt": _ort,  # the same decoder-with-past export, run by TensorRT's execution provider
    "torch_compiled": _torch,  # compiles and quantizes at load: the artifact is the model folder
}
