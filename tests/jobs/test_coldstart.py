"""Cold start per warm-up strategy, each in a fresh process, on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.coldstart import STRATEGIES, cold_starts
from autoopt.jobs.launch import SubprocessLauncher
from autoopt.jobs.prepare import prepare
from autoopt.report.measurement import coldstart_table

pytestmark = pytest.mark.slow


def test_every_strategy_is_timed_from_load_to_each_shapes_first_request(tiny_model: Path, tmp_path: Path) -> None:
    workload = WorkloadConfig(name="w", prompt_lengths=[8, 16], output_lengths=[3], eval_windows=2, eval_window_len=32)
    target = TargetConfig(name="cpu", memory_gb=8.0, cores=1, price_per_hour=0.1, price_source="test")
    prep = prepare(ModelConfig(name="tiny", kind="hf", path=str(tiny_model)), target, workload, BenchConfig(), tmp_path)
    launcher = SubprocessLauncher()
    candidate = CandidateConfig(threads=1)

    starts = cold_starts(prep, candidate, launcher.launch(prep.build_job(candidate)), launcher)

    assert [c.warmup for c in starts] == list(STRATEGIES)
    for c in starts:
        assert set(c.first_request_ms) == {"1x8x3", "1x16x3"} and c.peak_rss_mb > 0
        assert c.ready_s == pytest.approx(c.load_s + c.warmup_s) and c.load_s > 0
    none = starts[0]
    assert none.warmup == "none" and none.warmup_s < min(c.warmup_s for c in starts[1:])
    assert "ready s" in coldstart_table(starts)
