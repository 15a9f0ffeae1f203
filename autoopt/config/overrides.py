"""Check command-line overrides against conf/ and the schema before Hydra sees them, so that a
misspelt key, group option or value type fails in one line that lists what is valid."""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autoopt.config.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

_SCALARS = {int: "an integer", float: "a number", bool: "true or false"}


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """A ConfigError becomes one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check_overrides(args: list[str], conf_dir: Path, schema: type) -> None:
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key.startswith("hydra"):
            continue
        group = conf_dir / key
        if "." not in key and group.is_dir():
            options = sorted(p.stem for p in group.glob("*.yaml"))
            if value not in options and value != "null":
                raise ConfigError(f"{key}={value} is not a config in conf/{key}; choose one of: {', '.join(options)}")
            continue
        _check_key(key, value, schema)


def _check_key(key: str, value: str, schema: type) -> None:
    node: object = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return  # inside a free-form dict or list: nothing to check against
        hints = typing.get_type_hints(node)
        if part not in hints:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown key {key}; {where} takes: {', '.join(sorted(hints))}")
        node = hints[part]
    if typing.get_origin(node) is list:
        _check_list(key, value, typing.get_args(node)[0])
        return
    expected = _SCALARS.get(node)  # type: ignore[call-overload]
    if expected and not _parses_as(node, value):  # type: ignore[arg-type]
        raise ConfigError(f"{key}={value} must be {expected}")


def _check_list(key: str, value: str, item: type) -> None:
    if value.startswith("${"):
        return
    if not (value.startswith("[") and value.endswith("]")):
        raise ConfigError(f"{key}={value} must be a list: write {key}=[{value}]")
    expected = _SCALARS.get(item)
    items = [v.strip() for v in value[1:-1].split(",") if v.strip()]
    bad = [v for v in items if expected and not _parses_as(item, v)]
    if bad:
        raise ConfigError(f"{key}={value} has {bad[0]}; each item must be {expected}")


def _parses_as(kind: type, value: str) -> bool:
    if value.startswith("${"):
        return True
    if kind is bool:
        return value.lower() in ("true", "false")
    try:
        kind(value)
    except ValueError:
        return False
    return True
