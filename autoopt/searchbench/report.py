"""The benchmark's report: per sampler, the hypervolume fraction reached after k measured trials
(median and p10-p90 over seeds), the trials needed to reach 95 % of the grid's hypervolume, a PNG of
fraction vs k, and the raw curves as JSON."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autoopt.searchbench.replay import Bench, Curve

KS = (5, 10, 15, 20, 30)
LEVEL = 0.95


def space_digest(space: Any) -> str:
    """A short name for a space's exact values, so reports of overridden spaces do not collide."""
    return hashlib.sha256(json.dumps(asdict(space), sort_keys=True).encode()).hexdigest()[:8]


def _band(values: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=float)
    return float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90))


def _trials(curves: Sequence[Curve], level: float) -> list[float]:
    return [math.inf if (k := c.trials_to(level)) is None else float(k) for c in curves]


def _count(x: float, most: int) -> str:
    return f">{most}" if math.isinf(x) else f"{x:g}"


def table(bench: Bench, curves: dict[str, list[Curve]], ks: Sequence[int] = KS, level: float = LEVEL) -> str:
    """Markdown: one row per sampler; cells 'median [p10-p90]' of the hypervolume fraction at each k."""
    grid = len(bench.outcomes)
    most = min(len(c.fraction) for runs in curves.values() for c in runs) - 1
    ks = [k for k in ks if k <= most] or [most]  # replays shorter than every k: their last
    budget = max(1, math.floor(0.1 * grid))
    stall = min(20, most)
    head = ["sampler", "seeds", *(f"k={k}" for k in ks), f"trials to {level:.0%}: median (p90)",
            f"seeds at {level:.0%} by k={budget} (10 % of grid)", f"distinct measured by k={stall}: median [min]"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in curves.items():
        cells = [name, str(len(runs))]
        for k in ks:
            med, lo, hi = _band([c.fraction[k] for c in runs])
            cells.append(f"{med:.3f} [{lo:.3f}-{hi:.3f}]")
        t = _trials(runs, level)
        med_t, p90_t = float(np.median(t)), float(np.percentile(t, 90, method="higher"))
        cells.append(f"{_count(med_t, most)} ({_count(p90_t, most)})")
        hits = sum(1 for x in t if x <= budget)
        # a seed that had not reached the level when its replay ended at k=most may still reach it by k=budget
        cells.append(f"{hits}/{len(runs)}" if budget <= most or hits == len(runs)
                     else f">={hits}/{len(runs)} (replayed to k={most})")
        distinct = [c.measured[stall] for c in runs]
        cells.append(f"{np.median(distinct):g} [{min(distinct)}]")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(curves: dict[str, list[Curve]], grid_size: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in curves.items():
        f = np.asarray([c.fraction for c in runs])
        k = np.arange(f.shape[1])
        line = ax.plot(k[1:], np.median(f, axis=0)[1:], label=f"{name} (median of {len(runs)} seeds)")[0]
        ax.fill_between(k[1:], np.percentile(f, 10, axis=0)[1:], np.percentile(f, 90, axis=0)[1:],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(LEVEL, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.1 * grid_size, color="grey", linestyle="--", linewidth=1, label="10 % of the grid")
    ax.set_xlabel("k = distinct candidates measured (n_trials, fp32 reference included)")
    ax.set_ylabel("hypervolume of the feasible front found / the grid's")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(right=min(max(len(c.fraction) for runs in curves.values() for c in runs) - 1, grid_size))
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(bench: Bench, curves: dict[str, list[Curve]], folder: Path, title: str = "") -> list[Path]:
    """Write `report.md` (the table and the grid's front), `hv_vs_trials.png` and `curves.json` into
    `folder`; return their paths, the Markdown first."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = len(bench.outcomes)
    failed = sum(1 for o in bench.outcomes.values() if o.values is None)
    feasible = sum(1 for o in bench.outcomes.values() if o.feasible)
    title = title or f"space={getattr(bench.space, 'name', '?')}: {grid} candidates"
    lines = [
        f"# Search benchmark: {title}",
        "",
        f"Grid: {grid} distinct candidates ({failed} failed, {feasible} feasible); its feasible front has "
        f"{len(bench.grid_front)} points; hypervolume {bench.grid_hypervolume:.6g} against the reference point "
        f"{tuple(round(v, 6) for v in bench.hv_reference)} (fp32 latency, fp32 cost, 1 - accuracy bar).",
        "",
        "Hypervolume fraction after k measured trials: median [p10-p90] over seeds.",
        "",
        table(bench, curves),
        "",
    ]
    md = folder / "report.md"
    md.write_text("\n".join(lines))
    png = plot(curves, grid, folder / "hv_vs_trials.png", title)
    raw = folder / "curves.json"
    raw.write_text(json.dumps({
        "grid_size": grid, "grid_hypervolume": bench.grid_hypervolume, "hv_reference": bench.hv_reference,
        "curves": {name: [asdict(c) for c in runs] for name, runs in curves.items()},
    }))
    return [md, png, raw]
