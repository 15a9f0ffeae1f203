"""What people read after a study: the front as tables and pictures."""

from __future__ import annotations

from autoopt.report.plots import front_3d_html, front_projections
from autoopt.report.tables import console_table, flatten, format_value, front_rows, to_csv, to_markdown

__all__ = [
    "console_table",
    "flatten",
    "format_value",
    "front_3d_html",
    "front_projections",
    "front_rows",
    "to_csv",
    "to_markdown",
]
