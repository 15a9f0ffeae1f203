"""The measuring job with the serving objective: a real open-loop capacity search on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.config.serving import ServingConfig
from autoopt.jobs.launch import InProcessLauncher
from autoopt.jobs.prepare import prepare
from autoopt.progress import listening

pytestmark = pytest.mark.slow


def test_serving_figures_come_with_the_candidates_batcher_knobs(tiny_model: Path, tmp_path: Path) -> None:
    serving = ServingConfig(rate_rps=20.0, duration_s=1.0, max_requests=30, peak_rate_rps=100.0)
    workload = WorkloadConfig(name="w", prompt_lengths=[16], output_lengths=[2, 6], eval_windows=2, eval_window_len=32,
                              serving=serving)
    target = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")
    bench = BenchConfig(warmup_runs=1, min_runs=2, min_seconds=0.0)
    prep = prepare(ModelConfig(name="tiny", kind="hf", path=str(tiny_model)), target, workload, bench, tmp_path,
                   serving=True)
    candidate = CandidateConfig(threads=1, serving_max_batch=8, serving_queue_delay_ms=5.0)
    launcher = InProcessLauncher()

    job = prep.measure_job(candidate, launcher.launch(prep.build_job(candidate)))
    steps: list[str] = []
    with listening(steps.append):
        result = launcher.launch(job)

    assert job.serving is not None and job.serving.max_batch == 8 and job.runtime.max_batch >= 8
    s = result.serving
    assert s is not None and s.max_batch == 8 and s.probes >= 1
    assert s.capacity_rps > 0, "the tiny model holds its SLOs at some rate"
    assert set(s.classes) == {"P0", "P1", "P2", "P3"}
    assert s.replicas is not None and s.replicas >= 1 and s.usd_per_day == pytest.approx(s.replicas * 0.1 * 24)
    # the workload's expected 4 tokens per request, whichever lengths the capacity run happened to draw
    assert s.usd_per_1m_output_tokens_at_peak == pytest.approx(s.replicas * 0.1 / (100.0 * 4 * 3600) * 1e6)
    counts = [(c.offered, c.completed) for c in s.classes.values()]  # every p99 comes with its sample count
    # every completed request has 2+ tokens here, so each class that completed one has its longest wait
    assert all(c.itl_max_p99_ms is not None and c.itl_max_p99_ms > 0 for c in s.classes.values() if c.completed)
    assert all(o is not None and d is not None and d <= o for o, d in counts) and sum(d for _, d in counts) > 0
    curve = s.load_curve  # every probe of the search, with what each class got
    assert len(curve) == s.probes and {p.rate_rps for p in curve if p.holds} and max(
        p.rate_rps for p in curve if p.holds) == s.capacity_rps
    assert all(set(p.e2e_p99_ms) == set(p.completed) == set(s.classes) for p in curve)
    assert all(p.why_not for p in curve if not p.holds) and not any(p.why_not for p in curve if p.holds)
    # what the sweep's live line showed meanwhile: each phase, and each probe of the search as it started
    probes = [s for s in steps if s.startswith("capacity probe")]
    assert probes[0] == "capacity probe 1: 20 req/s for 3 s" and len(probes) == len(curve)
    assert steps[0].startswith("load the engine") and steps.index(probes[-1]) < steps.index(
        "accuracy against the fp32 reference")
