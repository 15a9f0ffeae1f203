"""Typed configuration: schemas (`schema`), Hydra registration (`store`), validation (`load`).

Kept free of imports beyond the schemas: engines import them, and deployed bundles load engines.
"""

from autoopt.config.errors import ConfigError
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
]
