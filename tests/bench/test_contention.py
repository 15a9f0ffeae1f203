"""other_cpu_share: what other processes took of the machine while a block ran, not what the block itself took."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from autoopt.bench.contention import other_cpu_share
from autoopt.jobs.confirm import Confirmation, Ratio, SpeedSample

SPIN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < {s}: pass"


def _spin(seconds: float) -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def test_another_process_spinning_one_cpu_is_counted_and_this_ones_own_work_is_not() -> None:
    cpus = psutil.cpu_count() or 1
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


def test_a_side_by_side_is_contended_when_any_run_had_a_quarter_of_the_machine_taken() -> None:
    def confirmation(*shares: float) -> Confirmation:
        samples = [SpeedSample(100.0, {"e2e_p90": 10.0}, 6, share) for share in shares]
        return Confirmation("e2e_p90", Ratio([1.0]), Ratio([1.0]), samples[:1], samples[1:])

    assert not confirmation(0.02, 0.1).contended
    assert confirmation(0.02, 0.1, 0.4).contended and confirmation(0.02, 0.1, 0.4).other_cpu_share == 0.4
