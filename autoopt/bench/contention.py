"""How much of the machine other work took while a measurement ran: a side-by-side ratio taken while another
process held a core says as much about that process as about the two candidates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil


@dataclass
class OtherLoad:
    """Filled in when the `other_cpu_share` block ends."""

    share: float = 0.0


def _busy_s() -> float:
    t = psutil.cpu_times()  # summed over every CPU; steal (a hypervisor's other guests) counts as busy
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _own_s(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def other_cpu_share() -> Iterator[OtherLoad]:
    """The share of all CPUs' time, over the block's wall time, spent on anything but this process (and its
    children): 0 on an otherwise idle machine, 0.5 on two CPUs with one other process spinning."""
    process = psutil.Process()
    load = OtherLoad()
    busy, own, start = _busy_s(), _own_s(process), time.perf_counter()
    try:
        yield load
    finally:
        wall = time.perf_counter() - start
        other = (_busy_s() - busy) - (_own_s(process) - own)
        load.share = max(0.0, other) / (wall * (psutil.cpu_count() or 1)) if wall > 0 else 0.0
