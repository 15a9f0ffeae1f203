"""A live line for the sweep: trials done/total, the current trial's step, elapsed, ETA, front size.
Log records print above it. Without a terminal (CI), only the log lines appear."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SweepProgress:
    def __init__(self, total: int, front: int = 0):  # front: the size of a resumed study's front
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("front {task.fields[front]}"),
            TextColumn("· {task.fields[step]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("sweep", total=total, front=front, step="starting")

    def step(self, text: str) -> None:
        self._progress.update(self._task, step=text)

    def trial_done(self, front_size: int) -> None:
        self._progress.update(self._task, advance=1, front=front_size)

    @contextmanager
    def live(self) -> Iterator[SweepProgress]:
        handler = RichHandler(console=self.console, show_path=False, markup=False, log_time_format="%H:%M:%S")
        root = logging.getLogger()
        old = root.handlers[:]
        root.handlers = [handler]
        try:
            with self._progress:
                yield self
        finally:
            root.handlers = old
