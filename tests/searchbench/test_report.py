"""End to end on the synthetic ground truth: replays of every sampler, the table, the plot."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from autoopt.searchbench.replay import Bench, Outcome, replay_all
from autoopt.searchbench.report import table, write_report


def test_report_has_a_row_per_sampler_a_plot_and_the_raw_curves(bench: Bench, tmp_path: Path) -> None:
    n = len(bench.outcomes)
    names = ["random", "tpe_s3"]  # the cheap ones: determinism of the others is tested in test_replay
    curves = replay_all(bench, names, range(2), n, say=lambda _: None)

    md, png, raw = write_report(bench, curves, tmp_path / "r")

    text = md.read_text()
    for name in names:
        assert f"| {name} | 2 |" in text
    assert "k=5" in text and "k=10" not in text  # only the k this replay reached
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(raw.read_text())
    assert data["grid_size"] == n and len(data["curves"]["tpe_s3"]) == 2
    assert all(len(c["fraction"]) == n + 1 for c in data["curves"]["random"])


def test_trials_to_95_says_more_than_the_budget_when_never_reached(bench: Bench) -> None:
    curves = replay_all(bench, ["random"], range(2), 1, say=lambda _: None)  # k=1: the reference only
    # no k of the table is reached: the replay's last is the one column, so the heading's "after k" has its k
    assert "| random | 2 | 0.000 [0.000-0.000] | >1 (>1) | 0/2 | 1 [1] |" in table(bench, curves)
    assert "| sampler | seeds | k=1 |" in table(bench, curves)


def test_seeds_at_95_by_a_budget_beyond_the_replay_are_a_lower_bound(bench: Bench) -> None:
    padded = replace(bench, outcomes={**bench.outcomes, **{f"x{i}": Outcome(None, {}) for i in range(32)}})
    curves = replay_all(padded, ["random"], range(2), 2, say=lambda _: None)  # 40 candidates: 10 % is k=4

    row = next(line for line in table(padded, curves).splitlines() if line.startswith("| random"))

    assert "| 0/2 |" not in row and "(replayed to k=2)" in row
