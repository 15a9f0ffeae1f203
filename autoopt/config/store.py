"""Register the schemas with Hydra so that YAML in conf/ is type-checked against them."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from autoopt.config.schema import (
    MeasureConfig,
    SweepConfig,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="measure_schema", node=MeasureConfig)
    cs.store(name="sweep_schema", node=SweepConfig)
