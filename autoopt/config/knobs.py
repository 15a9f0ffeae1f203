"""Search knobs, each declared once: a field of `CandidateConfig` built with `knob(...)` carries its
choices, default, the engines it applies to and its one-line meaning. The space schema, value checks,
space checks, candidate labels and the README's knob table are all derived from those declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from autoopt.config.errors import ConfigError

ENGINES = ("torch", "ort", "ort_genai", "ort_tensorrt", "torch_compiled")
WEIGHT_ONLY = ("int4", "int8_weight")
_KNOB = "autoopt.knob"


@dataclass(frozen=True)
class Knob:
    """One dimension of the search space.

    `choices` is the closed set of values, or None for an integer >= `minimum` (0 meaning "the default
    of the target/workload"). `engines` are the engines the knob means something to; for the others it
    must keep its default. `quants`, when set, restricts the knob to candidates with one of those
    quantization schemes (it is neither sampled nor allowed to differ from its default otherwise).
    `engine_quants` narrows `quants` for some engines: ((engine, quants), ...), where an engine's own kernels take
    the knob for fewer schemes (a block size means nothing to a per-channel int8). `only_with`: ((knob, values),
    ...), other knobs that must hold one of those values for this one to change anything (a queue delay means
    nothing to a batch of one row); those knobs are declared before it, so the sampler has drawn them first.
    `label` formats the knob in a candidate's short name ("" = not shown).
    """

    name: str
    default: Any
    meaning: str
    engines: tuple[str, ...]
    choices: tuple[Any, ...] | None = None
    minimum: int = 0
    quants: tuple[str, ...] | None = None
    label: str = "{name}={value}"
    zero: str = "0"  # how the label shows 0 for an open-range knob ("all" cores, the workload's batch)
    show_default: bool = True  # False: the label shows the knob only when it is set away from its default
    engine_quants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    only_with: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def quants_for(self, engine: str) -> tuple[str, ...] | None:
        """The schemes the knob applies to on `engine` (None: all)."""
        return dict(self.engine_quants).get(engine, self.quants)

    def applies(self, engine: str, quant: str, others: Mapping[str, Any]) -> bool:
        """Whether the knob changes anything on a candidate of `engine` and `quant` whose other knobs are `others`
        (those of `only_with` at least)."""
        quants = self.quants_for(engine)
        return (engine in self.engines and (quants is None or quant in quants)
                and all(others[name] in values for name, values in self.only_with))

    def unused_by(self, others: Mapping[str, Any]) -> str | None:
        """The `only_with` knob whose value in `others` leaves this one without effect, as `name=value`."""
        for name, values in self.only_with:
            if others[name] not in values:
                return f"{name}={_join([others[name]])}"
        return None

    def value_problem(self, value: Any) -> str | None:
        if self.choices is None:
            if not isinstance(value, int) or isinstance(value, bool) or value < self.minimum:
                return f"candidate.{self.name}={value} must be an integer >= {self.minimum} (0 = default)"
            return None
        if value not in self.choices:
            return f"candidate.{self.name}={value} is not valid; choose one of: {_join(self.choices)}"
        return None

    def format(self, value: Any) -> str:
        if isinstance(value, bool):
            shown = value if self.default is False else not value  # a flag shows when it is set away from default
            return self.label.format(name=self.name, value=str(value).lower()) if shown else ""
        if self.choices is None and value == 0:
            value = self.zero
        return self.label.format(name=self.name, value=value)


def knob(
    default: Any,
    meaning: str,
    engines: tuple[str, ...] = ENGINES,
    choices: tuple[Any, ...] | None = None,
    *,
    minimum: int = 0,
    quants: tuple[str, ...] | None = None,
    label: str = "{name}={value}",
    zero: str = "0",
    show_default: bool = True,
    engine_quants: tuple[tuple[str, tuple[str, ...]], ...] = (),
    only_with: tuple[tuple[str, tuple[Any, ...]], ...] = (),
) -> Any:
    """A dataclass field that declares a knob (its name is the field's name)."""
    spec = Knob("", default, meaning, engines, choices, minimum, quants, label, zero, show_default, engine_quants,
                only_with)
    return field(default=default, metadata={_KNOB: spec})


def knobs_of(schema: type) -> dict[str, Knob]:
    """The knobs declared on `schema`'s fields, in declaration order."""
    out = {}
    for f in fields(schema):
        spec = f.metadata.get(_KNOB)
        if spec is not None:
            out[f.name] = Knob(f.name, *(getattr(spec, k.name) for k in fields(Knob) if k.name != "name"))
    return out


def space_schema(name: str, candidate: type, doc: str) -> type:
    """A dataclass with a name, one list field per knob of `candidate` (default: [the knob's default]), and
    `by_engine`: engine -> knob -> the values of that knob's list the engine is searched with (default: all)."""
    specs: list[tuple[str, Any, Any]] = [("name", str, field(default="???"))]
    for k in knobs_of(candidate).values():
        kind = list[type(k.default)]  # type: ignore[misc]
        specs.append((k.name, kind, field(default_factory=_listed(k.default))))
    specs.append(("by_engine", dict[str, dict[str, list[Any]]], field(default_factory=dict)))
    cls = make_dataclass(name, specs)
    cls.__doc__ = doc
    return cls


def _listed(value: Any) -> Callable[[], list[Any]]:
    return lambda: [value]


def candidate_value_problem(candidate: Any) -> str | None:
    """A knob value that no engine or target accepts, as one line; None if every value is valid."""
    for k in knobs_of(type(candidate)).values():
        problem = k.value_problem(getattr(candidate, k.name))
        if problem:
            return problem
    return None


def inapplicable_knob(candidate: Any) -> str | None:
    """A knob set away from its default on a candidate it does not apply to."""
    values = vars(candidate)
    for k in knobs_of(type(candidate)).values():
        if values[k.name] == k.default or k.applies(candidate.engine, candidate.quant, values):
            continue
        if candidate.engine not in k.engines:
            where = f"engine={candidate.engine}"
        elif (quants := k.quants_for(candidate.engine)) is not None and candidate.quant not in quants:
            where = f"quant={candidate.quant}"
        else:
            return (f"candidate.{k.name} changes nothing with {k.unused_by(values)}; leave it at its default "
                    f"({_join([k.default])}), it applies {_conditions(k)}")
        return f"candidate.{k.name} does not apply to {where}; it is used by {_users(k)}"
    return None


def check_space(space: Any, candidate: type) -> None:
    """Every list in the space is non-empty and holds valid values; the fp32 reference is in it."""
    for k in knobs_of(candidate).values():
        values = getattr(space, k.name)
        if not values:
            hint = _join(k.choices) if k.choices else f"integers >= {k.minimum}"
            raise ConfigError(f"space.{k.name} is empty; give at least one of: {hint}")
        for value in values:
            if k.value_problem(value):
                hint = f"choose from: {_join(k.choices)}" if k.choices else f"give integers >= {k.minimum}"
                raise ConfigError(f"space.{k.name} has {value}; {hint}")
    if "torch" not in space.engine or "none" not in space.quant:
        raise ConfigError("space.engine must include torch and space.quant none: the fp32 reference is trial 0")
    check_by_engine(space, candidate)


def check_by_engine(space: Any, candidate: type) -> None:
    """Each `space.by_engine` entry names an engine of the space and a knob that applies to it, and keeps some of
    that knob's values in the space (torch keeps quant none: the fp32 reference)."""
    knobs = knobs_of(candidate)
    for engine, narrowed in space.by_engine.items():
        where = f"space.by_engine.{engine}"
        if engine not in space.engine:
            raise ConfigError(f"{where} narrows an engine space.engine does not search ({_join(space.engine)})")
        for name, values in narrowed.items():
            k = knobs.get(name)
            if k is None or name == "engine":
                raise ConfigError(f"{where} has {name}, which is not a knob; choose from: {_join(list(knobs)[1:])}")
            if engine not in k.engines:
                raise ConfigError(f"{where}.{name}: knob {name} does not apply to engine={engine}; it is used by "
                                  f"{_users(k)}")
            outside = [v for v in values if not offered(v, getattr(space, name))]
            if outside or not values:
                raise ConfigError(f"{where}.{name} has {_join(outside) if outside else 'no value'}; give values of "
                                  f"space.{name} ({_join(getattr(space, name))})")
    if not offered("none", space.by_engine.get("torch", {}).get("quant", ["none"])):
        raise ConfigError("space.by_engine.torch.quant must include none: the fp32 reference is trial 0")


def typed_by_engine(space: Any, candidate: type) -> dict[str, dict[str, list[Any]]]:
    """`space.by_engine` with a whole number given for a float knob as that float (YAML's `5` for `5.0`), as
    OmegaConf types the knob's own list; every other value as it is (a `1` is never `true`)."""
    knobs = knobs_of(candidate)

    def typed(name: str, value: Any) -> Any:
        k = knobs.get(name)
        whole = isinstance(value, int) and not isinstance(value, bool)
        return float(value) if k is not None and isinstance(k.default, float) and whole else value

    return {engine: {name: [typed(name, v) for v in values] for name, values in narrowed.items()}
            for engine, narrowed in space.by_engine.items()}


def offered(value: Any, choices: Sequence[Any]) -> bool:
    """`value` is one of `choices`, type included (a YAML `1` is not `true`)."""
    return any(value == c and type(value) is type(c) for c in choices)


def label(candidate: Any) -> str:
    """A short name: engine and quant, then every other knob that applies to this candidate."""
    parts = [candidate.engine, candidate.quant]
    for k in knobs_of(type(candidate)).values():
        if k.name in ("engine", "quant") or not k.label or not k.applies(candidate.engine, candidate.quant,
                                                                        vars(candidate)):
            continue
        if not k.show_default and getattr(candidate, k.name) == k.default:
            continue
        text = k.format(getattr(candidate, k.name))
        if text:
            parts.append(text)
    return " ".join(parts)


def markdown_table(candidate: type) -> str:
    """The README's table of knobs: name, values, default, engines, meaning."""
    rows = ["| knob | values | default | engines | meaning |", "|---|---|---|---|---|"]
    for k in knobs_of(candidate).values():
        values = _join(k.choices, " ") if k.choices else f"integer >= {k.minimum}"
        engines = "; ".join(
            ("all" if names == list(ENGINES) else ", ".join(names)) + (f" ({'/'.join(quants)})" if quants else "")
            for quants, names in _by_quants(k).items()
        )
        if k.only_with:
            engines += f"; {_conditions(k)}"
        default = str(k.default).lower() if isinstance(k.default, bool) else k.default
        rows.append(f"| `candidate.{k.name}` | {values} | {default} | {engines} | {k.meaning} |")
    return "\n".join(rows)


def _by_quants(k: Knob) -> dict[tuple[str, ...] | None, list[str]]:
    """The knob's engines grouped by the schemes it applies to on each, in declaration order."""
    groups: dict[tuple[str, ...] | None, list[str]] = {}
    for engine in k.engines:
        groups.setdefault(k.quants_for(engine), []).append(engine)
    return groups


def _users(k: Knob) -> str:
    """Who a knob applies to, as one phrase: 'engines ort, ort_genai with quant int4, int8_weight; engines
    torch_compiled with quant int4'."""
    return "; ".join(
        f"engines {_join(engines)}" + (f" with quant {_join(quants)}" if quants else "")
        for quants, engines in _by_quants(k).items()
    )


def _conditions(k: Knob) -> str:
    """A knob's `only_with`, as one phrase: 'with serving_batching group and serving_max_batch 2/4/8/16'."""
    return "with " + " and ".join(f"{name} {_join(values, '/')}" for name, values in k.only_with)


def _join(values: Any, sep: str = ", ") -> str:
    return sep.join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)

