"""What an engine declares about itself, without importing its runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autoopt.config.schema import CandidateConfig

# The precision a quantization scheme needs the target to support.
QUANT_PRECISION = {
    "none": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "int8_dynamic": "int8",
    "int8_weight": "int8",
    "int4": "int4",
}


@dataclass(frozen=True)
class PassStep:
    """One build step: a registered pass name and its settings (part of the cache key)."""

    name: str
    settings: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineInfo:
    """An engine's capabilities, used to reject candidates before any build.

    `quants` maps a device to the quantization schemes this engine runs there; `knobs` names the
    candidate fields that mean something to this engine (others must keep their defaults);
    `kv_caches` the cache layouts it implements; `requires` maps a device to
    (importable module, pip extra) that must be present to run there.
    `plan` turns a candidate into the passes that build its artifact from the model folder;
    `rule`, when given, returns why a candidate the table allows still cannot run on a device.
    """

    name: str
    engine_class: str  # "module:Class", imported only when a candidate is loaded
    quants: dict[str, tuple[str, ...]]
    knobs: tuple[str, ...]
    kv_caches: tuple[str, ...]
    requires: dict[str, tuple[str, str]]
    plan: Callable[[CandidateConfig, str], list[PassStep]]
    description: str = ""
    rule: Callable[[CandidateConfig, str], str | None] | None = None

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.quants)
