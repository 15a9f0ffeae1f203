"""Typed configuration: schemas, Hydra registration, validation."""

from autoopt.config.errors import ConfigError
from autoopt.config.load import load_measure_config, to_typed
from autoopt.config.schema import (
    BenchConfig,
    CandidateConfig,
    MeasureConfig,
    ModelConfig,
    TargetConfig,
    WorkloadConfig,
)

__all__ = [
    "BenchConfig",
    "CandidateConfig",
    "ConfigError",
    "MeasureConfig",
    "ModelConfig",
    "TargetConfig",
    "WorkloadConfig",
    "load_measure_config",
    "to_typed",
]
