"""Peak memory of the measuring process itself."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """High-water resident set size of this process, in MiB.

    Linux's VmHWM belongs to the address space, which exec replaces, so it covers this process only.
    getrusage's ru_maxrss survives exec and would report the parent's peak at fork when that is larger;
    it is only the fallback where /proc is absent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
