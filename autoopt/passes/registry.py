"""Build passes by name. A pass turns an input folder into an output folder; nothing else.

Each entry names the module holding `run(src: Path, dst: Path, **settings) -> None` and the
packages whose versions change its output (they enter the build cache key). The module is imported
only when the pass runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PassStep:
    """One build step: a registered pass name and its settings (part of the cache key)."""

    name: str
    settings: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PassInfo:
    module: str
    libraries: tuple[str, ...]


PASSES: dict[str, PassInfo] = {
    "onnx_export": PassInfo("autoopt.passes.onnx_export", ("torch", "transformers", "onnx", "onnxscript", "onnx_ir")),
    "ort_fuse": PassInfo("autoopt.passes.ort_fuse", ("onnxruntime", "onnx")),
    "ort_int8_dynamic": PassInfo("autoopt.passes.ort_quant", ("onnxruntime", "onnx")),
    "ort_int8_static": PassInfo("autoopt.passes.ort_static", ("onnxruntime", "onnx", "tokenizers")),
    "ort_weight_only": PassInfo("autoopt.passes.ort_quant", ("onnxruntime", "onnx")),
    "genai_build": PassInfo(
        "autoopt.passes.genai_build",
        ("onnxruntime_genai", "onnxruntime", "transformers", "torch", "onnx", "onnx_ir", "numpy"),
    ),
}


def pass_problem(step: PassStep) -> str | None:
    """Why `step`'s settings cannot build, from the pass's own `check_<name>(**settings)` where it has one
    (it raises ValueError); None when they can. Called before any build, so a bad combination is pruned."""
    check = getattr(importlib.import_module(PASSES[step.name].module), f"check_{step.name}", None)
    try:
        if check is not None:
            check(**step.settings)
    except ValueError as e:
        return str(e)
    return None


def pass_function(name: str) -> Callable[..., None]:
    if name not in PASSES:
        raise KeyError(f"unknown pass {name!r}; registered: {', '.join(PASSES)}")
    module = importlib.import_module(PASSES[name].module)
    return getattr(module, f"run_{name}")
