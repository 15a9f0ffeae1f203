"""Turn an Optuna trial into a candidate. Knobs are conditional on the engine: each engine's knobs
are separate parameters (`ort.quant`, `torch.kv_cache`, ...), so every parameter keeps one fixed
set of choices, which Optuna's samplers require."""

from __future__ import annotations

from dataclasses import fields

import optuna

from autoopt.config.schema import CandidateConfig, SpaceConfig
from autoopt.engines.registry import engine_info

WEIGHT_ONLY = ("int4", "int8_weight")
_INT4_KNOBS = ("int4_block_size", "int4_accuracy_level")
_ORDER = [f.name for f in fields(CandidateConfig) if f.name != "engine"]


def _choices(space: SpaceConfig, engine: str, knob: str) -> list[object]:
    info = engine_info(engine)
    values = list(getattr(space, knob))
    if knob == "quant":  # what the engine runs on any device; the target check prunes the rest
        known = {q for quants in info.quants.values() for q in quants}
        values = [q for q in values if q in known]
    return values


def sample(trial: optuna.Trial, space: SpaceConfig) -> CandidateConfig:
    engine = trial.suggest_categorical("engine", space.engine)
    info = engine_info(engine)
    knobs: dict[str, object] = {}
    for knob in _ORDER:
        if knob not in info.knobs or (knob in _INT4_KNOBS and knobs.get("quant") not in WEIGHT_ONLY):
            continue
        choices = _choices(space, engine, knob)
        if choices:
            knobs[knob] = trial.suggest_categorical(f"{engine}.{knob}", choices)
    return CandidateConfig(engine=engine, **knobs)  # type: ignore[arg-type]


def reference_params(space: SpaceConfig) -> dict[str, object]:
    """Trial parameters of the fp32 torch reference: default knobs where the space has them."""
    default = CandidateConfig()
    params: dict[str, object] = {"engine": "torch", "torch.quant": "none"}
    for knob in engine_info("torch").knobs:
        if knob == "quant":
            continue
        choices = _choices(space, "torch", knob)
        value = getattr(default, knob)
        params[f"torch.{knob}"] = value if value in choices else choices[0]
    return params


def label(c: CandidateConfig) -> str:
    """A short name for a candidate: its engine, then the knobs that apply to it."""
    info = engine_info(c.engine)
    parts = [c.engine, c.quant]
    if c.quant in WEIGHT_ONLY:
        parts.append(f"b{c.int4_block_size}/L{c.int4_accuracy_level}")
    if "fuse" in info.knobs and c.fuse:
        parts.append("fused")
    if "graph_opt" in info.knobs:
        parts.append(f"opt={c.graph_opt}")
    parts += [f"kv={c.kv_cache}", f"t={c.threads or 'all'}", f"b={c.batch_size or 'wl'}", f"warm={c.warmup}"]
    return " ".join(parts)
