"""The front as rows: a CSV for machines, Markdown for the report, a table for the terminal."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoopt.pareto import Point

Row = dict[str, Any]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted keys: {"speed": {"e2e_ms": {"p90": 3}}} -> {"speed.e2e_ms.p90": 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def front_rows(points: Sequence[Point], names: Sequence[str], chosen_key: str | None = None) -> list[Row]:
    """One row per point, sorted by its objectives: `trial`, the objectives under `names` (which should
    carry units, e.g. "latency_ms (e2e p90)"), then the payload flattened with dotted keys. With
    `chosen_key`, a `chosen` column marks that point with "*"."""
    rows = []
    for p in sorted(points, key=lambda p: (p.objectives, p.key)):
        if len(names) != len(p.objectives):
            raise ValueError(f"{len(names)} names for {len(p.objectives)} objectives of point {p.key}")
        row: Row = {"trial": p.key}
        if chosen_key is not None:
            row["chosen"] = "*" if p.key == chosen_key else ""
        row.update(zip(names, p.objectives, strict=True))
        for key, value in flatten(p.payload).items():
            row.setdefault(key, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
        rows.append(row)
    return rows


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def to_csv(rows: Sequence[Row], path: Path) -> Path:
    """Write `rows` with full precision; columns are the union of the rows' keys, first seen first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_value(value: Any) -> str:
    """Three significant digits for floats (no exponent between 1e-3 and 1e6), plain text otherwise."""
    if value is None:
        return ""
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    rounded = float(f"{value:.3g}")  # round first so that 9.996 shows as 10.0, not 10.00
    if 1e-3 <= abs(rounded) < 1e6:
        decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
        return f"{rounded:.{decimals}f}"
    return f"{value:.2e}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, formatted cells, and whether each column is numeric (right-aligned)."""
    columns = _columns(rows)
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    numeric = [all(_is_number(row[c]) for row in rows if row.get(c) is not None) for c in columns]
    return columns, cells, numeric


def to_markdown(rows: Sequence[Row]) -> str:
    """A GitHub Markdown table with aligned columns; numbers right-aligned."""
    if not rows:
        return ""
    columns, cells, numeric = _cells(rows)
    cells = [[c.replace("|", r"\|") for c in line] for line in cells]
    widths = [max(3, len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "| " + " | ".join(padded) + " |"

    dashes = ("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric, strict=True))
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(columns), rule, *(line(c) for c in cells)]) + "\n"


def console_table(rows: Sequence[Row], title: str | None = None) -> str:
    """The rows as a box-drawn table for the terminal (plain text, no colour codes)."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return ""
    columns, cells, numeric = _cells(rows)
    table = Table(title=title)
    for column, num in zip(columns, numeric, strict=True):
        table.add_column(column, justify="right" if num else "left", no_wrap=True)
    for line in cells:
        table.add_row(*line)
    console = Console(file=io.StringIO(), width=10_000, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n"
