from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autoopt.pareto import Point, front
from autoopt.report import console_table, front_3d_html, front_projections, front_rows, to_csv, to_markdown
from autoopt.report.tables import format_value

NAMES = ("latency_ms (e2e p90)", "usd_per_1m_output_tokens", "accuracy_loss (1 - top1 agreement)")


@pytest.fixture
def trials() -> list[Point]:
    objectives = [
        (40.0, 0.90, 0.0),
        (22.5, 0.50, 0.004),
        (12.25, 0.30, 0.05),
        (45.0, 0.95, 0.01),  # dominated by trial 0
        (30.0, 0.70, 0.06),  # dominated by trial 1
        (12.3456, 0.2999, 0.0512),
    ]
    quants = ["none", "int8_dynamic", "int4", "none", "int4", "int4"]
    return [
        Point(str(i), o, {"engine": "ort", "quant": q, "int4": {"block_size": 32}, "steps": ["export", "quant"]})
        for i, (o, q) in enumerate(zip(objectives, quants, strict=True))
    ]


def test_front_rows_sorted_by_latency_with_units_knobs_and_chosen_mark(trials: list[Point]) -> None:
    rows = front_rows(front(trials), NAMES, chosen_key="1")

    assert [r["trial"] for r in rows] == ["2", "5", "1", "0"]
    assert list(rows[0])[:5] == ["trial", "chosen", *NAMES]
    assert rows[0]["int4.block_size"] == 32 and rows[0]["steps"] == "export,quant"
    assert [r["chosen"] for r in rows] == ["", "", "*", ""]


def test_format_value_keeps_three_significant_digits() -> None:
    assert [format_value(v) for v in (12.3456, 0.0512345, 9.996, 1234.5, 0.000123, 0.0, 7, None, "int4")] == [
        "12.3", "0.0512", "10.0", "1230", "1.23e-04", "0", "7", "", "int4",
    ]  # fmt: skip


def test_markdown_table_is_aligned_and_rounded(trials: list[Point]) -> None:
    text = to_markdown(front_rows(front(trials), NAMES))

    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line the same width
    assert lines[0].startswith("| trial") and "latency_ms (e2e p90)" in lines[0]
    assert set(lines[1]) <= set("|-:") and lines[1].count(":") == 3 + 1  # 3 objectives + int4.block_size
    assert "12.3 |" in text and "12.3456" not in text


def test_csv_keeps_full_precision(tmp_path: Path, trials: list[Point]) -> None:
    path = to_csv(front_rows(front(trials), NAMES), tmp_path / "sub" / "front.csv")

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["2", "5", "1", "0"]
    assert rows[1]["latency_ms (e2e p90)"] == "12.3456"


def test_console_table_shows_every_front_trial_without_colour_codes(trials: list[Point]) -> None:
    text = console_table(front_rows(front(trials), NAMES), title="Pareto front")

    assert "Pareto front" in text and "usd_per_1m_output_tokens" in text
    assert all(f" {key} " in text for key in ("0", "1", "2", "5"))
    assert "\x1b[" not in text


def test_front_projections_writes_a_png(tmp_path: Path, trials: list[Point]) -> None:
    path = front_projections(trials, front(trials), NAMES, tmp_path / "front.png", chosen_key="1")

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_infeasible_trials_and_the_accuracy_bar_are_drawn_and_equal_points_share_one_label(
    tmp_path: Path, trials: list[Point]
) -> None:
    from autoopt.report.plots import _labels

    twins = [Point("9", (3.0, 0.5, 0.01), {}), Point("14", (3.0, 0.5, 0.02), {}), Point("2", (4.0, 0.4, 0.0), {})]
    assert _labels(twins, 1) == {(3.0, 0.5): "9,14", (4.0, 0.4): "2"}
    assert _labels(twins, 2) == {(3.0, 0.01): "9", (3.0, 0.02): "14", (4.0, 0.0): "2"}

    feasible = [p for p in trials if p.objectives[2] <= 0.05]
    path = front_projections(trials, front(feasible), NAMES, tmp_path / "front.png", chosen_key="1",
                             feasible=feasible, limits={2: (0.05, "accuracy bar (0.95)")})

    assert len(feasible) < len(trials) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_front_3d_html_is_self_contained_and_labelled(tmp_path: Path, trials: list[Point]) -> None:
    labels = {"2": "trial 2: int4"}

    path = front_3d_html(trials, front(trials), NAMES, tmp_path / "front.html", labels=labels, chosen_key="1")

    text = path.read_text(encoding="utf-8")
    assert "trial 2: int4" in text and "trial 5" in text and "trial 1" in text
    assert "quant=int8_dynamic" in text  # hover carries the candidate's knobs
    assert "<script src=" not in text and len(text) > 1_000_000  # plotly.js embedded: opens offline


def test_plots_refuse_a_chosen_key_off_the_front(tmp_path: Path, trials: list[Point]) -> None:
    with pytest.raises(ValueError, match="chosen_key='3'"):
        front_projections(trials, front(trials), NAMES, tmp_path / "front.png", chosen_key="3")
