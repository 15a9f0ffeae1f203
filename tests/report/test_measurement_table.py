from __future__ import annotations

from dataclasses import replace

from autoopt.report.measurement import measurement_table
from tests.study.results import result


def _line(table: str, head: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(head))


def test_noise_is_the_cv_within_a_shape_not_the_spread_between_shapes() -> None:
    r = result(100.0, 0.1, 0.99)
    speed = replace(r.speed, ttft_ms=replace(r.speed.ttft_ms, cv=0.30), ttft_cv_within_shape_median=0.12,
                    e2e_ms=replace(r.speed.e2e_ms, cv=0.25), e2e_cv_within_shape_median=None)

    table = measurement_table(replace(r, speed=speed))

    assert "cv within shape 12.0%" in _line(table, "TTFT") and "30.0%" not in _line(table, "TTFT")
    assert "cv" not in _line(table, "e2e") and "25.0%" not in _line(table, "e2e")
