"""Check command-line overrides against conf/ and the schema before Hydra sees them, so that a
misspelt key, group option or value type fails in one line that lists what is valid."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
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


def check_composition(config_name: str, args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config as Hydra will and refuse, in one line, what Hydra would end in a multi-line report or a
    traceback: a file under conf/ (conf/local/ included) that is not YAML or does not fit its schema, an override
    it cannot parse or merge, and a run folder (under `workspace`) it cannot create, which it creates before
    autoopt starts."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    if any(a.startswith("-") for a in args):
        return  # Hydra's own flags (--config-name X, -m, ...) change what it composes: left to Hydra
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=args, return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.cwd = os.getcwd()
            HydraConfig.instance().set_config(cfg)
            run_dir = Path(cfg.hydra.run.dir)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(_one_line(e)) from None
    finally:
        HydraConfig.instance().cfg = None  # hydra.main sets its own
    # Its parent (workspace/hydra/<command>) is kept from run to run, so creating it now leaves nothing behind; a
    # folder made and removed in it is the one test of writability that also holds for root and read-only mounts.
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = f"{e.strerror}: {e.filename}"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(dir=run_dir.parent))
            return
        except OSError as e:
            why = f"nothing can be created in {run_dir.parent}: {e.strerror}"
    raise ConfigError(
        f"cannot create the run folder {run_dir} ({why}); set workspace= or AUTOOPT_WORKSPACE to a writable folder"
    )


def _one_line(e: BaseException) -> str:
    """Hydra's composition error and its cause (where Hydra chains the reason), without type dumps or search
    paths: "In 'target/x': Key 'y' not in 'TargetConfig' (at target.y)"."""
    lines: list[str] = []
    cause: BaseException | None = e
    while cause is not None:
        lines += [line.strip() for line in str(cause).split("Config search path:")[0].splitlines() if line.strip()]
        cause = cause.__cause__
    key = next((line.partition(":")[2].strip() for line in lines if line.startswith("full_key:")), None)
    kept = [line for line in lines if not line.startswith(("full_key:", "reference_type=", "object_type=", "See https"))]
    text = re.sub(r" \w+ raised while composing config:", "", " ".join(kept))
    return f"{text} (at {key})" if key else text


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
        if typing.get_origin(node) is list:  # a list of configs (serving.classes): indexed by position only
            if not part.isdigit():
                rest = ".".join(parts[i + 1:])
                where = ".".join(parts[:i])
                raise ConfigError(f"{where} is a list: index it by position, e.g. {where}.0{'.' + rest if rest else ''}"
                                  f"={value} (not {part})")
            node = typing.get_args(node)[0]
            continue
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
