"""Pictures of the front: a PNG of 2-D projections for the report, an offline HTML 3-D scatter to explore.

`names` are the objective names with units (e.g. "latency_ms (e2e p90)"), in the order of the points'
objectives; the first one is the x axis of every projection.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoopt.pareto import Point
from autoopt.report.tables import flatten, format_value

_GREY, _FRONT, _CHOSEN = "#9a9a9a", "#1f77b4", "#d62728"


def _chosen(front_points: Sequence[Point], chosen_key: str | None) -> Point | None:
    if chosen_key is None:
        return None
    for p in front_points:
        if p.key == chosen_key:
            return p
    raise ValueError(f"chosen_key={chosen_key!r} is not a front point; front keys: {[p.key for p in front_points]}")


def _column(points: Sequence[Point], i: int) -> list[float]:
    return [p.objectives[i] for p in points]


def _labels(points: Sequence[Point], j: int) -> dict[tuple[float, float], str]:
    """One label per drawn position of panel `j` (x: objective 0), the keys of every point drawn there joined, so
    that candidates with equal figures do not print their keys over each other."""
    at: dict[tuple[float, float], list[str]] = {}
    for p in points:
        at.setdefault((float(f"{p.objectives[0]:.3g}"), float(f"{p.objectives[j]:.3g}")), []).append(p.key)
    return {xy: ",".join(keys) for xy, keys in at.items()}


def _short(name: str) -> str:
    return name.split(" (")[0]


def front_projections(
    all_points: Sequence[Point],
    front_points: Sequence[Point],
    names: Sequence[str],
    path_png: Path,
    chosen_key: str | None = None,
    feasible: Sequence[Point] | None = None,
    limits: Mapping[int, tuple[float, str]] | None = None,
) -> Path:
    """Panels of the first objective against each other one: feasible trials grey dots, infeasible ones grey
    crosses (`feasible` None: every point is), front points blue and labelled with their key, the chosen point a
    red star; `limits` maps an objective's index to a bound drawn across its panel, with its label."""
    from matplotlib.figure import Figure  # the object API needs no display and leaves pyplot's backend alone

    chosen = _chosen(front_points, chosen_key)
    ok = {p.key for p in (all_points if feasible is None else feasible)}
    inside = [p for p in all_points if p.key in ok]
    outside = [p for p in all_points if p.key not in ok]
    groups = [(inside, "o", f"feasible trials ({len(inside)})"), (outside, "x", f"infeasible trials ({len(outside)})")]
    panels = len(names) - 1
    fig = Figure(figsize=(6.4 * panels, 5.6), dpi=120, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for j, ax in enumerate(axes, start=1):
        for points, marker, label in groups:
            if points:
                ax.scatter(_column(points, 0), _column(points, j), s=22, c=_GREY, alpha=0.7, marker=marker, label=label)
        if limits and j in limits:
            bound, what = limits[j]
            ax.axhline(bound, color=_CHOSEN, linestyle="--", linewidth=0.8, alpha=0.7, label=what)
        ax.scatter(
            _column(front_points, 0),
            _column(front_points, j),
            s=48,
            c=_FRONT,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=f"Pareto front ({len(front_points)})",
        )
        for (x, y), keys in _labels(front_points, j).items():
            ax.annotate(
                keys,
                (x, y),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=8,
                color=_FRONT,
            )
        if chosen is not None:
            ax.scatter(
                [chosen.objectives[0]],
                [chosen.objectives[j]],
                s=260,
                marker="*",
                c=_CHOSEN,
                edgecolors="black",
                linewidths=0.6,
                zorder=4,
                label=f"chosen: trial {chosen.key}",
            )
        ax.set_xlabel("\n".join(textwrap.wrap(names[0], 60)), fontsize=9)
        ax.set_ylabel("\n".join(textwrap.wrap(names[j], 45)), fontsize=9)
        ax.set_title(f"{_short(names[0])} vs {_short(names[j])}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Pareto front, 2-D projections (lower is better on every axis)")
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png)
    return path_png


def _hover(p: Point, names: Sequence[str], label: str) -> str:
    lines = [f"<b>{html.escape(label)}</b>"]
    lines += [f"{html.escape(n)}: {format_value(float(v))}" for n, v in zip(names, p.objectives, strict=True)]
    lines += [f"{html.escape(k)}={html.escape(format_value(v))}" for k, v in flatten(p.payload).items()]
    return "<br>".join(lines)


def front_3d_html(
    all_points: Sequence[Point],
    front_points: Sequence[Point],
    names: Sequence[str],
    path_html: Path,
    labels: Mapping[str, str] | None = None,
    chosen_key: str | None = None,
) -> Path:
    """A self-contained interactive 3-D scatter (plotly.js embedded, opens offline). Hovering a point
    shows its objectives and payload (the candidate's knobs); front points are labelled with
    `labels[key]` (default "trial <key>")."""
    if len(names) != 3:
        raise ValueError(f"front_3d_html needs exactly 3 objective names, got {list(names)}")
    import plotly.graph_objects as go

    chosen = _chosen(front_points, chosen_key)

    def label(p: Point) -> str:
        return (labels or {}).get(p.key, f"trial {p.key}")

    def trace(points: Sequence[Point], name: str, text: bool, **marker: Any) -> Any:
        return go.Scatter3d(
            x=_column(points, 0),
            y=_column(points, 1),
            z=_column(points, 2),
            mode="markers+text" if text else "markers",
            name=name,
            marker=marker,
            text=[label(p) for p in points] if text else None,
            textfont={"size": 10},
            hovertext=[_hover(p, names, label(p)) for p in points],
            hoverinfo="text",
        )

    front_keys = {p.key for p in front_points}
    others = [p for p in all_points if p.key not in front_keys]
    traces = [
        trace(others, f"other complete trials ({len(others)})", False, size=3, color=_GREY, opacity=0.5),
        trace(front_points, f"Pareto front ({len(front_points)})", True, size=5, color=_FRONT),
    ]
    if chosen is not None:
        traces.append(trace([chosen], f"chosen: {label(chosen)}", False, size=9, color=_CHOSEN, symbol="diamond"))
    fig = go.Figure(traces)
    fig.update_layout(
        title="Pareto front (lower is better on every axis)",
        scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]},
        legend={"itemsizing": "constant"},
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    path_html = Path(path_html)
    path_html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path_html, include_plotlyjs=True, full_html=True)
    return path_html
