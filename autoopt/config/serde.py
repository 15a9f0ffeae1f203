"""Dataclasses to plain JSON-able dicts and back, without OmegaConf: records cross process boundaries,
Optuna's storage and bundle manifests this way, and each is rebuilt by its own class."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path, PurePath
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    """`obj` as JSON-able data: nested dataclasses as dicts, paths as strings, tuples as lists."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild `cls` from `to_dict` output; nested dataclasses (also in lists and Optionals) included.
    Unknown or missing keys raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} needs a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = data.keys() - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return cls(**{k: _value(hints[k], v) for k, v in data.items()})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if hint is Path:
        return Path(value)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)  # type: ignore[arg-type]
    if origin is dict and len(typing.get_args(hint)) == 2:
        item = typing.get_args(hint)[1]
        return {k: _value(item, v) for k, v in value.items()}
    if origin in (list, tuple) and typing.get_args(hint):
        item = typing.get_args(hint)[0]
        items = [_value(item, v) for v in value]
        return tuple(items) if origin is tuple else items
    return value
