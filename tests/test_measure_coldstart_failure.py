"""`python -m autoopt.measure coldstart=true`: a cold-start child that crashes or times out fails in one line
with exit 1 and keeps the measurement already made (output=).
One that succeeds adds its results to that output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import autoopt.jobs.coldstart
import autoopt.jobs.launch
import autoopt.jobs.prepare
import autoopt.report.measurement
from autoopt.jobs.launch import JobFailed
from tests.study.results import result


class Launcher:
    def launch(self, job: Any) -> Any:
        return job


def _failing_cold_starts(*args: Any) -> Any:
    raise JobFailed("ColdStartJob timed out after 600s", "the child's log")


def test_a_failed_cold_start_exits_1_in_one_line_and_keeps_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoopt.measure import main

    measured = result(10.0, 1.0, 1.0)
    prep = SimpleNamespace(build_job=lambda c: "built", measure_job=lambda c, built: measured)
    monkeypatch.setattr(autoopt.jobs.prepare, "prepare", lambda *args, **kwargs: prep)
    monkeypatch.setattr(autoopt.jobs.launch, "SubprocessLauncher", Launcher)
    monkeypatch.setattr(autoopt.jobs.coldstart, "cold_starts", _failing_cold_starts)
    monkeypatch.setattr(autoopt.report.measurement, "measurement_table", lambda r: "table")
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["measure", "coldstart=true", f"output={out}", f"workspace={tmp_path / 'ws'}",
                                      f"cache_dir={tmp_path / 'cache'}"])

    with pytest.raises(SystemExit) as exit_:
        main()

    assert exit_.value.code == 1
    assert out.is_file()
    err = capsys.readouterr().err
    assert err.startswith("error: ColdStartJob timed out after 600s") and "Traceback" not in err


def test_the_cold_starts_are_added_to_the_output_after_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoopt.jobs.coldstart import ColdStart
    from autoopt.measure import main

    starts = [ColdStart("none", 1.0, 0.0, {"1x16x8": 50.0}, 300.0),
              ColdStart("shapes", 1.0, 0.5, {"1x16x8": 20.0}, 310.0, compile_s=0.25, compile_cache_warm=True)]
    prep = SimpleNamespace(build_job=lambda c: "built", measure_job=lambda c, built: result(10.0, 1.0, 1.0))
    monkeypatch.setattr(autoopt.jobs.prepare, "prepare", lambda *args, **kwargs: prep)
    monkeypatch.setattr(autoopt.jobs.launch, "SubprocessLauncher", Launcher)
    monkeypatch.setattr(autoopt.jobs.coldstart, "cold_starts", lambda *args: starts)
    monkeypatch.setattr(autoopt.report.measurement, "measurement_table", lambda r: "table")
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["measure", "coldstart=true", f"output={out}", f"workspace={tmp_path / 'ws'}",
                                      f"cache_dir={tmp_path / 'cache'}"])

    main()

    saved = json.loads(out.read_text())
    assert "speed" in saved  # the measurement, still there
    assert [c["warmup"] for c in saved["coldstart"]] == ["none", "shapes"]
    assert saved["coldstart"][1] == {"warmup": "shapes", "load_s": 1.0, "warmup_s": 0.5, "first_request_ms": {
        "1x16x8": 20.0}, "peak_rss_mb": 310.0, "compile_s": 0.25, "compile_cache_warm": True, "ready_s": 1.5}
    printed = capsys.readouterr().out
    assert "cold start (each strategy" in printed and printed.count(str(out)) == 2
