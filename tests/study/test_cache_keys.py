from __future__ import annotations

from pathlib import Path

from autoopt.config.schema import BenchConfig, CandidateConfig, TargetConfig, WorkloadConfig
from autoopt.passes.pipeline import step_key
from autoopt.passes.registry import PassStep
from autoopt.study.trial import candidate_key


def test_step_key_is_stable_and_depends_on_parent_pass_and_settings() -> None:
    a = step_key("model-1", PassStep("ort_weight_only", {"bits": 4, "block_size": 32}))

    assert a == step_key("model-1", PassStep("ort_weight_only", {"block_size": 32, "bits": 4}))
    assert a != step_key("model-2", PassStep("ort_weight_only", {"bits": 4, "block_size": 32}))
    assert a != step_key("model-1", PassStep("ort_weight_only", {"bits": 4, "block_size": 128}))
    assert a != step_key("model-1", PassStep("ort_int8_dynamic", {}))


def _prep(cores: int = 2, batch: int = 1):
    from autoopt.jobs.prepare import Prepared

    target = TargetConfig(name="cpu", memory_gb=8, cores=cores, price_per_hour=0.1, price_source="x")
    workload = WorkloadConfig(name="w", batch_size=batch)
    return Prepared(model=None, reference=None, target=target, workload=workload, bench=BenchConfig(), cache_dir=Path("."), reference_sha256="")  # type: ignore[arg-type]


def test_runtime_defaults_resolve_before_keying_so_equal_candidates_share_a_key() -> None:
    prep = _prep(cores=2, batch=1)

    assert candidate_key(CandidateConfig(threads=0), prep) == candidate_key(CandidateConfig(threads=2), prep)
    assert candidate_key(CandidateConfig(batch_size=0), prep) == candidate_key(CandidateConfig(batch_size=1), prep)
    assert candidate_key(CandidateConfig(threads=1), prep) != candidate_key(CandidateConfig(threads=2), prep)
