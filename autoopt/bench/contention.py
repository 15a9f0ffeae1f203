"""How much of the CPUs a measurement may run on other work took while it ran: a side-by-side ratio taken while
another process held one of those cores says as much about that process as about the two candidates. A job pinned
to some of the machine's CPUs (taskset, a container's cpuset) is contended only by work on those: busy CPUs it may
not run on take nothing from it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

PROC_STAT = Path("/proc/stat")


@dataclass
class OtherLoad:
    """Filled in when the `other_cpu_share` block ends."""

    share: float = 0.0


def allowed_cpus() -> set[int] | None:
    """The CPUs this process may run on, where the OS says (Linux); None where it does not (every CPU)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return set(getaffinity(0)) if getaffinity is not None else None


def per_cpu_busy_s(stat: str, cpus: set[int]) -> tuple[float, int]:
    """The busy seconds summed over those of `cpus` that `stat` (/proc/stat's text) lists, and how many it lists.
    Busy: user, nice, system, irq, softirq and steal (a hypervisor's other guests); guest time is already in user."""
    tick = os.sysconf("SC_CLK_TCK")
    busy, listed = 0.0, 0
    for line in stat.splitlines():
        label, _, rest = line.partition(" ")
        if not (label.startswith("cpu") and label[3:].isdigit() and int(label[3:]) in cpus):
            continue
        fields = [int(v) for v in rest.split()] + [0] * 8  # older kernels list fewer fields
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy += (user + nice + system + irq + softirq + steal) / tick
        listed += 1
    return busy, listed


def _machine_busy_s() -> float:
    t = psutil.cpu_times()  # summed over every CPU; steal (a hypervisor's other guests) counts as busy
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _busy_reader() -> tuple[Callable[[], float], int]:
    """A reading of the busy seconds summed over the CPUs this process may run on, and how many they are; every
    CPU's where the OS does not say which, or /proc/stat does not list them all."""
    cpus = allowed_cpus()
    if cpus is not None:
        try:
            listed = per_cpu_busy_s(PROC_STAT.read_text(), cpus)[1]
        except OSError:
            listed = 0
        if listed == len(cpus):
            return (lambda: per_cpu_busy_s(PROC_STAT.read_text(), cpus)[0]), listed
    return _machine_busy_s, psutil.cpu_count() or 1


def _own_s(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def other_cpu_share() -> Iterator[OtherLoad]:
    """The share of the time of the CPUs this process may run on (see `_busy_reader`), over the block's wall time,
    spent on anything but this process (and its children): 0 on otherwise idle CPUs, 0.5 on two with one other
    process spinning on either."""
    process = psutil.Process()
    load = OtherLoad()
    busy_s, cpus = _busy_reader()
    busy, own, start = busy_s(), _own_s(process), time.perf_counter()
    try:
        yield load
    finally:
        wall = time.perf_counter() - start
        other = (busy_s() - busy) - (_own_s(process) - own)
        load.share = max(0.0, other) / (wall * cpus) if wall > 0 else 0.0
