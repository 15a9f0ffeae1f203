"""The config keys README names are the ones a command line takes: written from the root, and existing."""

from __future__ import annotations

import dataclasses
import re
import typing

from autoopt.config.schema import MeasureConfig, SweepConfig
from tests.conftest import REPO

BACKTICKED_DOTTED = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)+)[=`]")


def config_keys(schema: type, prefix: str = "") -> set[str]:
    """Every key of `schema`, nested sections included, as a command-line override spells it."""
    keys = set()
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        keys.add(key)
        kind = typing.get_type_hints(schema)[f.name]
        if dataclasses.is_dataclass(kind):
            keys |= config_keys(kind, key + ".")
    return keys


def test_every_config_key_the_readme_names_is_written_from_the_root() -> None:
    keys = config_keys(SweepConfig) | config_keys(MeasureConfig)
    named = set(BACKTICKED_DOTTED.findall((REPO / "README.md").read_text()))
    roots = {key.split(".")[0] for key in keys}
    # A name that is a key's tail (serving.x for workload.serving.x) is that key, written without its root.
    config_names = {n for n in named if n.split(".")[0] in roots or any(k.endswith("." + n) for k in keys)}

    assert sorted(n for n in config_names if n not in keys) == []
