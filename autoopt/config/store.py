"""Register the schemas with Hydra so that YAML in conf/ is type-checked against them."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from autoopt.config.schema import (
    MeasureConfig,
    ModelConfig,
    SpaceConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="measure_schema", node=MeasureConfig)
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(group="space", name="base_space", node=SpaceConfig)
    cs.store(group="target", name="base_target", node=TargetConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="workload", name="base_workload", node=WorkloadConfig)
