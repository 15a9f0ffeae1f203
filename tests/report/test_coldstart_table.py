from __future__ import annotations

from autoopt.jobs.coldstart import ColdStart
from autoopt.report.measurement import coldstart_table


def test_the_cold_start_table_says_what_compiling_took_and_whether_a_cache_served_it() -> None:
    starts = [
        ColdStart("none", 20.9, 0.0, {"1x8x3": 50.0}, 400.0, compile_s=19.5, compile_cache_warm=False),
        ColdStart("one", 3.4, 0.2, {"1x8x3": 9.0}, 400.0, compile_s=3.2, compile_cache_warm=True),
        ColdStart("shapes", 0.5, 0.3, {"1x8x3": 8.0}, 300.0),
    ]
    rows = coldstart_table(starts).splitlines()

    assert "of it compiling" in rows[1] and "peak RSS MiB" in rows[1]
    assert "19.5s (scratch)" in rows[2] and "3.2s (cache)" in rows[3]
    assert rows[4].split()[:3] == ["shapes", "0.50", "-"]
