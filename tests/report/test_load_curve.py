"""The capacity search's runs as a table and a picture."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autoopt.report.load_curve import load_curve_markdown, load_curve_png
from autoopt.result import ServingClassResult, ServingProbe, ServingResult


def _class(slo_ms: float) -> ServingClassResult:
    return ServingClassResult(slo_ms, 10.0, 5.0, 1.0, 1.0, 1.0, 0, 10, 10)


def _serving() -> ServingResult:
    probes = [  # in the order a capacity search runs them: doubling, then bisecting
        ServingProbe(4.0, True, [], 3.9, {"P0": 40.0, "P3": 90.0}, {"P0": 2, "P3": 20}, 0.41),
        ServingProbe(8.0, False, ["P0 e2e p99 450 ms > 200 ms"], 6.1, {"P0": 450.0, "P3": None}, {"P0": 3, "P3": 0}),
        ServingProbe(6.0, True, [], 5.8, {"P0": 150.0, "P3": 300.0}, {"P0": 4, "P3": 33}, 0.83),
    ]
    return ServingResult(6.0, False, 3, 4, 0.5, 40.0, 7, 1.0, 2.0, {"P0": _class(200.0), "P3": _class(0.0)}, probes,
                         warmup_s=2.0, judged_s=6.0)


def test_the_table_has_one_row_per_probe_by_rate_with_each_class_p99_and_its_samples() -> None:
    lines = load_curve_markdown(_serving()).splitlines()

    assert lines[0].startswith("Capacity 6.00 requests/s (max_batch 4, probe budget ran out before 5 %)")
    assert "Classes: P0 SLO 200 ms e2e; P3 best effort. Each probe: 2 s of warm-up traffic (served, not judged), " \
        "then 6 s " in lines[0]
    assert lines[2] == "| offered req/s | holds | completed req/s | busy | P0 e2e p99 ms (n) | P3 e2e p99 ms (n) | why not |"
    rows = lines[4:]
    assert [r.split(" | ")[0] for r in rows] == ["| 4.00", "| 6.00", "| 8.00"]
    assert rows[1] == "| 6.00 | yes | 5.80 | 83.0% | 150 (4) | 300 (33) |  |"
    assert rows[2] == "| 8.00 | no | 6.10 | - | 450 (3) | - | P0 e2e p99 450 ms > 200 ms |"


def test_a_class_with_streaming_deadlines_shows_the_p99s_they_judge() -> None:
    serving = _serving()
    classes = {"P0": replace(_class(0.0), ttft_slo_ms=300.0, itl_slo_ms=40.0), "P3": _class(0.0)}
    curve = [replace(p, ttft_p99_ms={"P0": 250.0}, itl_max_p99_ms={"P0": 30.0 + p.rate_rps})
             for p in serving.load_curve]
    lines = load_curve_markdown(replace(serving, classes=classes, load_curve=curve)).splitlines()

    assert "Classes: P0 SLO 300 ms to the first token, 40 ms between two tokens; P3 best effort." in lines[0]
    assert lines[2] == ("| offered req/s | holds | completed req/s | busy | P0 TTFT p99 ms (n) "
                        "| P0 longest ITL p99 ms (n) | P3 e2e p99 ms (n) | why not |")
    assert lines[5].startswith("| 6.00 | yes | 5.80 | 83.0% | 250 (4) | 36 (4) | 300 (33) |")
    old = [replace(p, ttft_p99_ms={}, itl_max_p99_ms={}) for p in serving.load_curve]  # recorded before they were kept
    assert load_curve_markdown(replace(serving, classes=classes, load_curve=old)).splitlines()[5].startswith(
        "| 6.00 | yes | 5.80 | 83.0% | - | - | 300 (33) |")


@pytest.mark.parametrize("streaming", [False, True])
def test_the_picture_is_written(tmp_path: Path, streaming: bool) -> None:
    serving = _serving()
    if streaming:
        curve = [replace(p, ttft_p99_ms={"P0": 250.0}, itl_max_p99_ms={"P0": 30.0}) for p in serving.load_curve]
        serving = replace(serving, classes={"P0": replace(_class(0.0), ttft_slo_ms=300.0, itl_slo_ms=40.0),
                                            "P3": _class(0.0)}, load_curve=curve)
    path = load_curve_png(serving, tmp_path / "curve.png", "test")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
