"""Checks of what an import cannot tell: is there a device, does the runtime's build have the provider.
Each imports its runtime when called, never when this module is imported."""

from __future__ import annotations

from autoopt.engines.info import autoopt_install

# The GPU builds install into the CPU builds' package directories: installing one over the other leaves a mix.
CPU_BUILDS_OUT = "pip uninstall -y onnxruntime onnxruntime-genai"


def cuda_device() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device found (torch.cuda.is_available() is False)"
    return None


def ort_provider(name: str, extra: str) -> str | None:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if name not in available:
        return (
            f"this onnxruntime build has no {name} (it has {', '.join(available)}): {CPU_BUILDS_OUT}, "
            f"then {autoopt_install(extra)}"
        )
    return None


def genai_cuda() -> str | None:
    import onnxruntime_genai as og

    if not og.is_cuda_available():
        return f"this onnxruntime-genai build has no CUDA support: {CPU_BUILDS_OUT}, then {autoopt_install('gpu')}"
    return None
