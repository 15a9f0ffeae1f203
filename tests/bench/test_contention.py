"""other_cpu_share: what other processes took of the CPUs this one may run on while a block ran, not what the block
itself took."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from autoopt.bench import contention
from autoopt.bench.contention import allowed_cpus, other_cpu_share, per_cpu_busy_s
from autoopt.jobs.confirm import Confirmation, Ratio, SpeedSample

SPIN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < {s}: pass"


def _spin(seconds: float) -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def test_another_process_spinning_one_cpu_is_counted_and_this_ones_own_work_is_not() -> None:
    cpus = len(allowed_cpus() or range(psutil.cpu_count() or 1))  # the spinner inherits this process's CPUs
    other = subprocess.Popen([sys.executable, "-c", SPIN.format(s=2.5)])
    try:
        time.sleep(0.3)  # its start-up done
        with other_cpu_share() as busy:
            time.sleep(1.0)
    finally:
        other.wait()
    with other_cpu_share() as own:
        _spin(1.0)

    assert busy.share == pytest.approx(1 / cpus, abs=0.15)
    assert own.share < busy.share - 0.5 / cpus  # a spinning block of its own is not "other work"


def _stat(*busy_ticks: int) -> str:
    """/proc/stat's text with CPU i busy for busy_ticks[i] ticks of user time (and 1000 idle)."""
    rows = [f"cpu{i} {ticks} 0 0 1000 0 0 0 0 0 0" for i, ticks in enumerate(busy_ticks)]
    return "\n".join([f"cpu  {sum(busy_ticks)} 0 0 {1000 * len(busy_ticks)} 0 0 0 0 0 0", *rows, "intr 5 0"])


def test_only_the_cpus_this_process_may_run_on_count() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = "cpu  9 9 9 9\ncpu0 100 0 0 50 7 0 0 0 0 0\ncpu1 1 2 3 99 99 4 5 6 7 0\ncpu3 1000 0 0 0\n"
    assert per_cpu_busy_s(stat, {1}) == (pytest.approx(21 / tick), 1)  # guest (7) is within user already
    assert per_cpu_busy_s(stat, {0, 1, 2}) == (pytest.approx(121 / tick), 2)  # cpu2 is not listed


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="the OS says nothing of a process's CPUs")
def test_work_on_cpus_this_process_may_not_run_on_is_not_contention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(_stat(0, 0))
    monkeypatch.setattr(contention, "PROC_STAT", stat)
    monkeypatch.setattr(contention, "allowed_cpus", lambda: {1})  # pinned to CPU 1 of two
    with other_cpu_share() as load:
        start = time.perf_counter()
        time.sleep(0.5)
        # while it slept: CPU 0 spun for 100 s (not its), CPU 1 for as long as the block lasts
        stat.write_text(_stat(100 * tick, round((time.perf_counter() - start + 0.01) * tick)))
    assert load.share == pytest.approx(1.0, abs=0.1)


def test_a_side_by_side_is_contended_when_any_run_had_a_quarter_of_the_machine_taken() -> None:
    def confirmation(*shares: float) -> Confirmation:
        samples = [SpeedSample(100.0, {"e2e_p90": 10.0}, 6, share) for share in shares]
        return Confirmation("e2e_p90", Ratio([1.0]), Ratio([1.0]), samples[:1], samples[1:])

    assert not confirmation(0.02, 0.1).contended
    assert confirmation(0.02, 0.1, 0.4).contended and confirmation(0.02, 0.1, 0.4).other_cpu_share == 0.4
