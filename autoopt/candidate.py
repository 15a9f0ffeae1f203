"""Build and measure one candidate: prepare once (model, reference), then build and measure each in
a process of its own."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autoopt.accuracy.reference import Reference, ensure_reference
from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.isolation import run_job
from autoopt.models.source import ResolvedModel, resolve_model
from autoopt.result import MeasureResult

log = logging.getLogger("autoopt")

BUILD_TIMEOUT_S = 1800
MEASURE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Prepared:
    model: ResolvedModel
    reference: Reference
    target: TargetConfig
    workload: WorkloadConfig
    bench: BenchConfig
    cache_dir: Path


def prepare(model_cfg: ModelConfig, target: TargetConfig, workload: WorkloadConfig, bench: BenchConfig, cache_dir: Path) -> Prepared:
    t0 = time.perf_counter()
    model = resolve_model(model_cfg, cache_dir)
    reference = ensure_reference(model, workload, cache_dir)
    log.info("model %s and its fp32 reference ready (%.1fs)", model.key, time.perf_counter() - t0)
    return Prepared(model, reference, target, workload, bench, cache_dir)


def build(prep: Prepared, candidate: CandidateConfig) -> dict:
    payload = {
        "candidate": asdict(candidate),
        "target": asdict(prep.target),
        "model_path": str(prep.model.path),
        "model_key": prep.model.key,
        "cache_dir": str(prep.cache_dir),
    }
    return run_job("autoopt.jobs:build_job", payload, BUILD_TIMEOUT_S)


def measure(prep: Prepared, candidate: CandidateConfig, built: dict) -> MeasureResult:
    payload = {
        "candidate": asdict(candidate),
        "target": asdict(prep.target),
        "workload": asdict(prep.workload),
        "bench": asdict(prep.bench),
        "model": prep.model.describe(),
        "reference": str(prep.reference.path),
        "artifact": built["artifact"],
        "build": built["build"],
    }
    threads = candidate.threads or prep.target.cores
    return MeasureResult.from_dict(run_job("autoopt.jobs:measure_job", payload, MEASURE_TIMEOUT_S, threads))
