"""Which candidates a target can run. Checked before any build: an invalid candidate is rejected
(or, in a study, pruned) with the reason, never built and never crashed."""

from __future__ import annotations

import importlib.util
from dataclasses import fields

from autoopt.config.schema import CandidateConfig, TargetConfig
from autoopt.engines.info import QUANT_PRECISION
from autoopt.engines.registry import ENGINE_NAMES, engine_info

CHOICES: dict[str, tuple[str, ...]] = {
    "engine": ENGINE_NAMES,
    "quant": tuple(QUANT_PRECISION),
    "graph_opt": ("disable", "basic", "extended", "all"),
    "kv_cache": ("dynamic", "static"),
    "warmup": ("none", "one", "shapes"),
}
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)
_DEFAULTS = CandidateConfig()


def value_problem(c: CandidateConfig) -> str | None:
    """A knob value that is not valid for any engine or target."""
    for key, choices in CHOICES.items():
        value = getattr(c, key)
        if value not in choices:
            return f"candidate.{key}={value} is not valid; choose one of: {', '.join(choices)}"
    if c.int4_block_size not in INT4_BLOCK_SIZES:
        return (
            f"candidate.int4_block_size={c.int4_block_size} is not valid; "
            f"choose one of: {', '.join(map(str, INT4_BLOCK_SIZES))}"
        )
    if c.int4_accuracy_level not in (1, 2, 3, 4):
        return f"candidate.int4_accuracy_level={c.int4_accuracy_level} is not valid; choose one of: 1, 2, 3, 4"
    for key in ("threads", "batch_size"):
        if getattr(c, key) < 0:
            return f"candidate.{key}={getattr(c, key)} must be >= 0 (0 = default)"
    return None


def target_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    """Why `target` cannot run candidate `c`, or None. Assumes `value_problem(c)` is None."""
    if c.engine not in target.engines:
        return f"engine={c.engine} is not available on target={target.name}; choose one of: {', '.join(target.engines)}"
    precision = QUANT_PRECISION[c.quant]
    if precision not in target.precisions:
        return (
            f"quant={c.quant} needs {precision}, which target={target.name} does not support "
            f"(supports: {', '.join(target.precisions)})"
        )
    info = engine_info(c.engine)
    quants = info.quants.get(target.device, ())
    if c.quant not in quants:
        runs = ", ".join(quants) or "nothing"
        return f"engine={c.engine} does not run quant={c.quant} on {target.device}; it runs: {runs}"
    if c.kv_cache not in info.kv_caches:
        return f"kv_cache={c.kv_cache} is not implemented by engine={c.engine}; choose one of: {', '.join(info.kv_caches)}"
    if info.rule and (reason := info.rule(c, target.device)):
        return f"engine={c.engine}: {reason}"
    if target.cores and c.threads > target.cores:
        return f"threads={c.threads} exceeds the {target.cores} cores of target={target.name}"
    for f in fields(CandidateConfig):
        if f.name != "engine" and f.name not in info.knobs and getattr(c, f.name) != getattr(_DEFAULTS, f.name):
            return f"candidate.{f.name} does not apply to engine={c.engine}; it takes: {', '.join(info.knobs)}"
    return None


def environment_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    """Why this machine cannot measure `c` for `target` (missing package or device), or None."""
    module, extra = engine_info(c.engine).requires[target.device]
    if importlib.util.find_spec(module) is None:
        return f"engine={c.engine} needs the python package {module!r}: pip install 'autoopt[{extra}]'"
    if target.device == "cuda" and not _cuda_present():
        return f"target={target.name} needs a CUDA device; this machine has none (measure it on the target itself)"
    return None


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()
