"""Checks of what an import cannot tell: is there a device, does the runtime's build have the provider.
Each imports its runtime when called, never when this module is imported."""

from __future__ import annotations

from autoopt.engines.info import autoopt_install


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
            f"this onnxruntime build has no {name} (it has {', '.join(available)}): install onnxruntime-gpu "
            f"in an environment without the CPU onnxruntime ({autoopt_install(extra)})"
        )
    return None


def genai_cuda() -> str | None:
    import onnxruntime_genai as og

    if not og.is_cuda_available():
        return f"this onnxruntime-genai build has no CUDA support: {autoopt_install('genai-cuda')}"
    return None
