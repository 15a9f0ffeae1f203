"""What an engine declares about itself, without importing its runtime."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

from autoopt.config.schema import CandidateConfig


def autoopt_install(extra: str | None = None) -> str:
    """How to install autoopt, with `extra`: from its source folder, since it is not published on a package index
    (`pip install autoopt` would fetch whatever else goes by that name)."""
    spec = f"'.[{extra}]'" if extra else "."
    return f"pip install -e {spec} in autoopt's source folder"


@dataclass(frozen=True)
class Requirement:
    """A python package an engine needs on a device, and how to get it.

    `extra` is the autoopt extra that installs it (None: a core dependency, or nothing autoopt can
    install); `hint` says how to get it when no extra does. `probe`, when given, checks what importing
    cannot (an execution provider, a device) and returns why it is unusable, or None.
    """

    module: str
    extra: str | None = None
    hint: str = ""
    probe: Callable[[], str | None] | None = None

    @property
    def install(self) -> str:
        if self.extra:
            return autoopt_install(self.extra)
        return self.hint or autoopt_install()

    def problem(self) -> str | None:
        if importlib.util.find_spec(self.module) is None:
            return f"needs the python package {self.module!r}: {self.install}"
        return self.probe() if self.probe else None


@dataclass(frozen=True)
class EngineInfo:
    """An engine's capabilities, used to reject candidates before any build.

    `quants` maps a device to the quantization schemes this engine runs there; `requires` maps a device
    to the packages that must be present to run there. Which knobs an engine takes is declared on the
    knobs themselves (`autoopt.config.schema.CandidateConfig`); how its artifact is built, in
    `autoopt.passes.plan`. `rule`, when given, returns why a candidate the table allows still cannot
    run on a device; `architectures` the model classes it takes. `static_cache`, when given, says whether
    a candidate decodes over a preallocated KV cache whose attention reads every slot (the unused ones behind
    a mask), which is what a decode step's KV bytes then count.
    """

    name: str
    engine_class: str  # "module:Class", imported only when a candidate is loaded
    quants: dict[str, tuple[str, ...]]
    requires: dict[str, tuple[Requirement, ...]]
    description: str = ""
    rule: Callable[[CandidateConfig, str], str | None] | None = None
    architectures: tuple[str, ...] | None = None  # HF `architectures[0]` it can build and run; None: any causal LM
    # the float a quant's activations are computed in, where the target must support more than the quant itself
    compute_precision: dict[str, str] = field(default_factory=dict)
    static_cache: Callable[[CandidateConfig], bool] | None = None
    # the devices where it batches continuously (serving_batching=continuous, for the engines that knob applies to);
    # None: every device it runs on (`devices`)
    continuous_on: tuple[str, ...] | None = None
    # whether its rows can sample (`Engine.samples`, which reads this): else a sampling workload leaves it out, and
    # serve answers a request's temperature with a 400. Every engine here samples today; the default is False so that
    # an engine whose runtime picks its token inside a graph, as torch_compiled did, has to say it can.
    samples: bool = False

    def decode_context(self, candidate: CandidateConfig, mean_context: float, max_length: int) -> float:
        """The positions one decode step's attention reads, on average over a request."""
        return max_length if self.static_cache and self.static_cache(candidate) else mean_context

    def model_problem(self, architecture: str) -> str | None:
        if self.architectures is None or architecture in self.architectures:
            return None
        return f"engine={self.name} cannot take a {architecture}; it takes: {', '.join(self.architectures)}"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.quants)

    @property
    def continuous_devices(self) -> tuple[str, ...]:
        return self.devices if self.continuous_on is None else self.continuous_on
