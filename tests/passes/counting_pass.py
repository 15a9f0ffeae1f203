"""A pass for testing the build cache itself: it copies its input, appends a line, and counts its runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

RUNS_FILE = "runs.log"


def run_counting(
    src: Path, dst: Path, tag: str = "", delay_s: float = 0.0, counter: str = "", fail: bool = False
) -> None:
    time.sleep(delay_s)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    with open(dst / "steps.txt", "a") as out:
        out.write(f"counting {tag}\n")
    if counter:
        with open(counter, "a") as log:
            log.write("run\n")
    if fail:
        raise RuntimeError("the counting pass was asked to fail")
