"""The two objective families and their constraints, on hand-made measurements."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autoopt.config.schema import SearchConfig, TargetConfig
from autoopt.result import ServingClassResult, ServingResult
from autoopt.study.objectives import constraints, objective_labels, objectives
from tests.study.results import result

CPU = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test")
SERVING = SearchConfig(objective="serving")


def _serving(capacity: float, cost: float | None) -> ServingResult:
    p0 = ServingClassResult(200.0, 150.0, 40.0, 10.0, 1.0, capacity * 0.1, 0)
    return ServingResult(capacity, True, 6, 4, 0.5, 40.0, None if cost is None else 2, None if cost is None else 4.8,
                         cost, {"P0": p0})


def test_latency_family_is_latency_cost_and_accuracy_loss() -> None:
    r = result(80.0, 0.3, 0.97)

    assert objectives(r, SearchConfig()) == (80.0, 0.3, pytest.approx(0.03))
    assert objective_labels(SearchConfig())[0] == "latency_ms (e2e p90, warm)"


def test_serving_family_maximises_capacity_and_prices_the_peak() -> None:
    r = replace(result(80.0, 0.3, 0.97), serving=_serving(12.5, 0.9))

    assert objectives(r, SERVING) == (-12.5, 0.9, pytest.approx(0.03))
    assert constraints(r, SERVING, CPU)["serving_slos"] == 0.0


def test_a_candidate_that_holds_no_slo_is_infeasible_with_an_infinite_cost() -> None:
    r = replace(result(80.0, 0.3, 0.97), serving=_serving(0.0, None))

    assert objectives(r, SERVING)[1] == math.inf
    assert constraints(r, SERVING, CPU)["serving_slos"] == 1.0


def test_serving_objective_without_serving_figures_says_so() -> None:
    with pytest.raises(ValueError, match="needs measurements with serving figures"):
        objectives(result(80.0, 0.3, 0.97), SERVING)


def test_gpu_memory_is_never_compared_with_host_rss() -> None:
    gpu = replace(CPU, name="t4", device="cuda", memory_gb=16.0)

    values = constraints(result(80.0, 0.3, 0.97, rss_mb=64_000.0), SearchConfig(), gpu)

    assert "memory" not in values and values["memory_unmeasured"] == 0.0


def test_the_decode_bar_is_a_constraint_only_when_set() -> None:
    r = result(80.0, 0.3, 0.97)
    prefix = r.accuracy.decode_prefix_agreement

    assert "decode_bar" not in constraints(r, SearchConfig(), CPU)
    assert constraints(r, SearchConfig(min_decode_prefix_agreement=1.0), CPU)["decode_bar"] == pytest.approx(1.0 - prefix)
    assert constraints(r, SearchConfig(min_decode_prefix_agreement=prefix), CPU)["decode_bar"] <= 0


def test_the_decode_path_must_pick_what_its_own_logits_pick_by_default() -> None:
    r = result(80.0, 0.3, 0.97)
    broken = replace(r, accuracy=replace(r.accuracy, decode_self_agreement=0.56))
    sound = replace(r, accuracy=replace(r.accuracy, decode_self_agreement=0.99))

    assert constraints(broken, SearchConfig(), CPU)["decode_self"] == pytest.approx(0.9 - 0.56)
    assert constraints(sound, SearchConfig(), CPU)["decode_self"] <= 0
    assert "decode_self" not in constraints(broken, SearchConfig(min_decode_self_agreement=0.0), CPU)
    assert "decode_self" not in constraints(r, SearchConfig(), CPU)  # recorded before it was measured


def test_under_a_sampling_workload_the_bar_and_the_loss_read_sampled_agreement() -> None:
    search = SearchConfig(min_top1_agreement=0.95)
    greedy = result(10.0, 1.0, 0.94)
    sampled = replace(greedy, accuracy=replace(greedy.accuracy, sampled_agreement=0.97))

    assert constraints(greedy, search, CPU)["accuracy_bar"] == pytest.approx(0.01)  # top-1 0.94 misses the bar
    assert constraints(sampled, search, CPU)["accuracy_bar"] == pytest.approx(-0.02)  # sampled 0.97 clears it
    assert objectives(sampled, search)[2] == pytest.approx(0.03)
