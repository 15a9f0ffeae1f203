from __future__ import annotations

import subprocess
import sys

from autoopt.bench.memory import peak_rss_mb


def test_peak_rss_grows_with_an_allocation() -> None:
    # In a fresh process: this one's high-water mark already holds whatever earlier tests allocated.
    code = (
        "from autoopt.bench.memory import peak_rss_mb; before = peak_rss_mb(); block = bytearray(64 * 2**20); "
        "block[::4096] = b'x' * len(block[::4096]); print(peak_rss_mb() - before)"
    )

    grown = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    assert grown >= 48


def test_child_peak_does_not_inherit_a_larger_parent_peak() -> None:
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from autoopt.bench.memory import peak_rss_mb; print(peak_rss_mb())"

    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    assert child < peak_rss_mb() - 200
    del ballast
