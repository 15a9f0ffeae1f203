"""Side-by-side confirmation: per-round ratios of two candidates timed alternately in fresh processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.confirm import Ratio, confirm
from autoopt.jobs.launch import SubprocessLauncher
from autoopt.jobs.prepare import prepare


def test_ratio_reports_the_median_and_range_of_the_rounds() -> None:
    ratio = Ratio([2.0, 3.5, 3.0])

    assert (ratio.median, ratio.low, ratio.high) == (3.0, 2.0, 3.5)
    assert str(ratio) == "3.00x (range 2.00-3.50 over 3 interleaved rounds)"


@pytest.mark.slow
def test_a_candidate_against_itself_confirms_a_ratio_near_one(tiny_model: Path, tmp_path: Path) -> None:
    target = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")
    workload = WorkloadConfig(name="w", prompt_lengths=[16], output_lengths=[8], eval_windows=2, eval_window_len=32)
    bench = BenchConfig(warmup_runs=1, min_runs=4, min_seconds=0.3)
    prep = prepare(ModelConfig(name="tiny", kind="hf", path=str(tiny_model)), target, workload, bench, tmp_path)
    launcher = SubprocessLauncher()
    candidate = CandidateConfig(threads=1)
    result = launcher.launch(prep.measure_job(candidate, launcher.launch(prep.build_job(candidate))))

    c = confirm(prep, result, result, "e2e_p90", launcher, rounds=2)

    assert result.speed.other_cpu_share is not None and 0.0 <= result.speed.other_cpu_share <= 1.0  # the trial's own

    assert len(c.speedup.rounds) == len(c.latency_gain.rounds) == 2
    assert all(s.runs >= 4 for s in c.reference + c.candidate)
    assert 0.2 < c.speedup.median < 5.0  # the same candidate both sides: no speed-up beyond the machine's swings
