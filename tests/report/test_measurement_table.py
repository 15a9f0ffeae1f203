from __future__ import annotations

from dataclasses import replace

from autoopt.report.measurement import bottlenecks, measurement_table
from autoopt.result import OpTime, PhaseProfile, Profile, ServingResult
from tests.study.results import result


def _line(table: str, head: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(head))


def test_noise_is_the_cv_within_a_shape_not_the_spread_between_shapes() -> None:
    r = result(100.0, 0.1, 0.99)
    speed = replace(r.speed, ttft_ms=replace(r.speed.ttft_ms, cv=0.30), ttft_cv_within_shape_median=0.12,
                    e2e_ms=replace(r.speed.e2e_ms, cv=0.25), e2e_cv_within_shape_median=None)

    table = measurement_table(replace(r, speed=speed))

    assert "cv within shape 12.0%" in _line(table, "TTFT") and "30.0%" not in _line(table, "TTFT")
    assert "cv" not in _line(table, "e2e") and "25.0%" not in _line(table, "e2e")


def test_the_share_other_processes_took_is_beside_the_timings_and_marked_above_a_quarter() -> None:
    r = result(100.0, 0.1, 0.99)

    quiet = _line(measurement_table(replace(r, speed=replace(r.speed, other_cpu_share=0.04))), "batch")
    busy = _line(measurement_table(replace(r, speed=replace(r.speed, other_cpu_share=0.6))), "batch")

    assert "other processes took 4% of the CPUs meanwhile" in quiet and "CONTENDED" not in quiet
    assert "CONTENDED: other processes took 60% of the CPUs" in busy and "rerun on a quiet machine" in busy
    assert "other processes" not in _line(measurement_table(r), "batch")  # not measured: nothing said


def test_the_capacity_search_s_own_share_is_on_the_serving_line_and_counts_as_contention() -> None:
    serving = ServingResult(12.0, True, 6, 4, 0.5, 40.0, 2, 4.8, 0.08, {})
    r = replace(result(100.0, 0.1, 0.99), serving=serving)
    busy = replace(r, serving=replace(r.serving, other_cpu_share=0.4), speed=replace(r.speed, other_cpu_share=0.1))

    line = _line(measurement_table(busy), "serving")

    assert "capacity 12.00 req/s" in line and "CONTENDED: other processes took 40% of the CPUs" in line
    assert busy.contended() and busy.busiest_share() == 0.4
    assert not replace(busy, serving=replace(r.serving, other_cpu_share=0.2)).contended()


def test_each_phase_says_how_much_of_it_its_ops_account_for() -> None:
    phase = PhaseProfile(phase="prefill", steps=1, profiled_ms=2.0, profiled_wall_ms=16.0, wall_ms=14.0,
                         top=(OpTime(op="MatMulNBits", ms=1.5, share=0.75, calls=8),))
    profile = Profile(engine="ort_genai", profiler="ort", batch=1, prompt_len=16, new_tokens=8, repeats=1,
                      phases=(phase,))

    assert bottlenecks(profile) == "prefill (ops 12% of it): MatMulNBits 75%"


def test_a_shape_model_s_caveat_follows_each_accuracy_line_and_its_perplexity_stays_readable() -> None:
    r = result(100.0, 0.1, 0.99)
    shape = replace(r, model={"name": "qwen2_0_5b_shape", "accuracy": "not meaningful: random weights"},
                    accuracy=replace(r.accuracy, perplexity=6.54e20, reference_perplexity=6.5e20))

    table = measurement_table(shape)

    assert "perplexity 6.54e+20 vs reference 6.5e+20" in _line(table, "accuracy")
    assert _line(table, "accuracy").endswith("not meaningful: random weights")
    assert _line(table, "decode").endswith("not meaningful: random weights")
    assert "perplexity 10.00 vs reference 10.00" in _line(measurement_table(r), "accuracy")
