"""What every trial of a run shares, prepared once in the parent: the resolved model and its fp32
reference; and the jobs that build and measure one candidate from it."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from autoopt.accuracy.decode import DECODE_MAX_LENGTH, DECODE_ROWS_PER_CALL
from autoopt.accuracy.reference import Reference, ensure_reference
from autoopt.bench.requests import make_requests
from autoopt.bench.roofline import target_bandwidth
from autoopt.config.errors import ConfigError
from autoopt.config.runtime import resolve_runtime
from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.config.serving import SERVING_KNOBS, ServingConfig
from autoopt.digest import sha256_file
from autoopt.engines.torch_compiled import inductor_cache_env
from autoopt.jobs.build import BuildJob
from autoopt.jobs.measure import MeasureJob
from autoopt.models.source import ResolvedModel, resolve_model
from autoopt.result import Bandwidth, Built

log = logging.getLogger("autoopt")


@dataclass(frozen=True)
class Prepared:
    model: ResolvedModel
    reference: Reference
    target: TargetConfig  # resolved: cores and memory detected
    workload: WorkloadConfig
    bench: BenchConfig
    cache_dir: Path
    reference_sha256: str  # of the reference file every measurement is compared with
    serving: bool = False  # also measure each candidate's serving capacity (the serving objective)
    bandwidth: Bandwidth | None = None  # the target's declared bandwidth, or this CPU's measured copy bandwidth

    def build_job(self, candidate: CandidateConfig) -> BuildJob:
        return BuildJob(candidate, self.target.device, str(self.model.path), self.model.key, str(self.cache_dir))

    def serving_config(self, candidate: CandidateConfig) -> ServingConfig:
        """The workload's traffic served with the candidate's batcher and scheduler knobs."""
        knobs = {field: getattr(candidate, knob) for field, knob in SERVING_KNOBS.items()}
        return replace(self.workload.serving, **knobs)

    def measure_job(self, candidate: CandidateConfig, built: Built) -> MeasureJob:
        serving = self.serving_config(candidate) if self.serving else None
        return MeasureJob(
            candidate=candidate,
            target=self.target,
            workload=self.workload,
            bench=self.bench,
            runtime=resolve_runtime(
                candidate,
                self.target,
                self.workload,
                # the decode check's prompts and continuations, and the teacher-forced accuracy windows: an
                # engine with a fixed longest sequence (ort_tensorrt's TensorRT profile) must take both
                min_length=max(DECODE_MAX_LENGTH, self.workload.eval_window_len),
                min_batch=max(DECODE_ROWS_PER_CALL, serving.max_batch if serving else 0),
            ),
            model=self.model.describe(),
            reference=str(self.reference.path),
            built=built,
            serving=serving,
            bandwidth=self.bandwidth,
        )


def check_context(model: ResolvedModel, workload: WorkloadConfig) -> None:
    """Refuse, in one line, requests longer than the model's positions: past them its outputs mean nothing,
    though every engine would still time them."""
    longest = max(workload.prompt_lengths) + max(workload.output_lengths) - 1  # the last token is never fed back
    limit = model.max_positions
    if limit is not None and longest > limit:
        raise ConfigError(
            f"workload.prompt_lengths + output_lengths need {longest} positions, past the {limit} of model "
            f"{model.name} (config.json max_position_embeddings); shorten the prompts or outputs"
        )


def prepare(
    model_cfg: ModelConfig,
    target: TargetConfig,
    workload: WorkloadConfig,
    bench: BenchConfig,
    cache_dir: Path,
    serving: bool = False,
) -> Prepared:
    t0 = time.perf_counter()
    # Every job process inherits this: inductor's compiled graphs land in autoopt's cache, so a later trial,
    # confirmation or cold-start run of the same torch_compiled graphs compiles from it.
    os.environ.update(inductor_cache_env(cache_dir))
    model = resolve_model(model_cfg, cache_dir)
    check_context(model, workload)
    reference = ensure_reference(model, workload, cache_dir)
    # Every measuring job cuts its requests from this text: a prompt longer than it fails here, before any build.
    make_requests(reference.stream(), workload.prompt_lengths, workload.output_lengths, 1)
    log.info("model %s and its fp32 reference ready (%.1fs)", model.key, time.perf_counter() - t0)
    bandwidth = target_bandwidth(target, repeats=3)
    if bandwidth is not None:
        log.info("memory bandwidth %.1f GB/s (%s)", bandwidth.gb_per_s, bandwidth.method)
    return Prepared(
        model, reference, target, workload, bench, cache_dir, sha256_file(reference.path), serving, bandwidth
    )
