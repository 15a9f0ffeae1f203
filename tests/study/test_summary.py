"""The front, its hypervolume and the pick, computed from stored measurements under the current settings."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autoopt.config.schema import CandidateConfig, ExportConfig, SearchConfig, TargetConfig
from autoopt.report.tables import front_rows
from autoopt.result import MeasureResult, ServingResult
from autoopt.study.objectives import constraints, objective_labels, objectives
from autoopt.study.record import TrialRecord
from autoopt.study.report import box_share, contended_note
from autoopt.study.summary import SweepError, gains, summarize
from tests.study.results import result

TARGET = TargetConfig(name="cpu", memory_gb=8.0, cores=2, price_per_hour=0.1, price_source="test")


def _study(*results, failed_first: bool = False) -> optuna.Study:
    search = SearchConfig()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * 3)
    if failed_first:
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    for i, r in enumerate(results):
        trial = study.ask()
        TrialRecord(r.candidate, f"c{i}", key=f"k{i}", result=r).write(trial)
        for name, value in constraints(r, search, TARGET).items():
            trial.set_constraint(name, value)
        study.tell(trial, objectives(r, search))
    return study


REFERENCE = result(100.0, 1.0, 1.0)
FAST = result(20.0, 0.2, 0.96, CandidateConfig(engine="ort_genai", quant="int4"))
EXACT = result(50.0, 0.5, 1.0, CandidateConfig(engine="ort_genai"))
DOMINATED = result(60.0, 0.6, 0.99, CandidateConfig(engine="ort"))


def test_front_keeps_nondominated_feasible_candidates_and_picks_one() -> None:
    s = summarize(_study(REFERENCE, FAST, EXACT, DOMINATED), SearchConfig(), ExportConfig(), TARGET)

    assert sorted(p.key for p in s.front) == ["1", "2"]
    assert s.reference.key == "0" and s.chosen.key in ("1", "2")
    assert s.hypervolume > 0
    assert s.records[s.chosen.key].result is not None


def test_a_stricter_bar_recomputes_feasibility_from_the_stored_measurements() -> None:
    study = _study(REFERENCE, FAST, EXACT, DOMINATED)  # told under the default bar, 0.95

    s = summarize(study, SearchConfig(min_top1_agreement=0.99), ExportConfig(), TARGET)

    assert "1" not in {p.key for p in s.feasible}
    assert [p.key for p in s.front] == ["2"]


def test_latency_objective_comes_from_the_current_setting() -> None:
    s = summarize(_study(REFERENCE, FAST), SearchConfig(latency="ttft_p50"), ExportConfig(), TARGET)

    assert {p.key: p.objectives[0] for p in s.points} == {"0": 25.0, "1": 5.0}


def test_a_study_without_a_complete_reference_cannot_be_summarized() -> None:
    study = _study(FAST, failed_first=True)

    with pytest.raises(SweepError, match="trial 0"):
        summarize(study, SearchConfig(), ExportConfig(), TARGET)


def test_nothing_feasible_is_an_error_not_an_empty_bundle() -> None:
    with pytest.raises(SweepError, match="no complete trial meets"):
        summarize(_study(result(100.0, 1.0, 0.5)), SearchConfig(), ExportConfig(), TARGET)


def _serving(r: MeasureResult, capacity: float) -> MeasureResult:
    """`r` with serving figures: `capacity` requests/s, costing 1/capacity per 1M output tokens at the peak (0: no
    offered rate held every SLO, so nothing is sized for the peak)."""
    held = capacity > 0
    peak = ServingResult(capacity, True, 6, 4, 0.5, 40.0, 2 if held else None, 4.8 if held else None,
                         1.0 / capacity if held else None, {})
    return replace(r, serving=peak)


def test_nothing_feasible_says_how_many_trials_broke_each_constraint() -> None:
    study = _study(_serving(REFERENCE, 0.0), _serving(FAST, 0.0), _serving(result(50.0, 0.5, 0.5), 0.0),
                   _serving(result(60.0, 0.6, 0.5), 2.0))

    with pytest.raises(SweepError) as e:
        summarize(study, SearchConfig(objective="serving"), ExportConfig(), TARGET)

    assert str(e.value) == ("no complete trial meets every constraint: of 4, 3 broke serving_slos, 2 broke "
                            "accuracy_bar; nothing to export")


@pytest.mark.parametrize(
    ("search", "why"),
    [(SearchConfig(confirm_rounds=0), "search.confirm_rounds=0"), (SearchConfig(objective="serving"), "serving")],
)
def test_pick_fastest_says_close_candidates_are_timed_side_by_side_only_when_they_will_be(search, why) -> None:
    close = result(21.0, 0.21, 0.97, CandidateConfig(engine="ort_genai", quant="int8_weight"))
    study = _study(_serving(REFERENCE, 1.0), _serving(FAST, 10.0), _serving(close, 9.5))
    assert "to be timed side by side" in summarize(study, SearchConfig(), ExportConfig(pick="fastest"), TARGET).reason

    s = summarize(study, search, ExportConfig(pick="fastest"), TARGET)

    assert "1 other front candidate(s) within 10%" in s.reason
    assert "to be timed side by side" not in s.reason and why in s.reason


def test_the_front_table_says_what_its_throughput_and_divergence_figures_are() -> None:
    search = SearchConfig()
    s = summarize(_study(REFERENCE, FAST, EXACT), search, ExportConfig(), TARGET)

    (row, *_) = front_rows(s.front, objective_labels(search))

    assert row["output_tokens_per_s (all rows, warm)"] == pytest.approx(50.0)  # FAST: 20 ms per request
    assert "kl_mean (KL(ref‖cand), nats)" in row and "tokens_per_s" not in row and "kl" not in row


def test_gains_on_a_target_priced_at_zero_say_the_cost_is_unchanged() -> None:
    free = [replace(r, cost=replace(r.cost, usd_per_1m_output_tokens=0.0)) for r in (REFERENCE, FAST)]
    s = summarize(_study(*free), SearchConfig(), ExportConfig(pick="min_latency"), TARGET)

    assert gains(s) == {"latency_x": 5.0, "cost_x": 1.0, "accuracy_loss": pytest.approx(0.04)}


@pytest.mark.parametrize("how", ["fastest", "min_latency", "knee"])
def test_the_serving_objective_s_pick_speaks_of_capacity_not_latency(how) -> None:
    study = _study(_serving(REFERENCE, 1.0), _serving(FAST, 10.0), _serving(EXACT, 5.0))

    s = summarize(study, SearchConfig(objective="serving"), ExportConfig(pick=how), TARGET)

    assert "capacity" in s.reason and "latency" not in s.reason


def test_on_a_gpu_target_the_front_shows_the_accelerator_memory_its_limit_is_checked_against() -> None:
    gpu = replace(TARGET, name="h100", device="cuda")
    on_card = [replace(r, memory=replace(r.memory, device_peak_mb=300.0)) for r in (REFERENCE, FAST)]

    s = summarize(_study(*on_card), SearchConfig(), ExportConfig(), gpu)

    assert all(p.payload["device_peak_mb"] == 300.0 and "peak_rss_mb" not in p.payload for p in s.points)
    assert "peak_rss_mb" in summarize(_study(*on_card), SearchConfig(), ExportConfig(), TARGET).front[0].payload


def test_a_front_with_no_room_on_one_axis_still_has_a_volume() -> None:
    unpriced = [replace(r, cost=replace(r.cost, usd_per_1m_output_tokens=0.0)) for r in (REFERENCE, FAST, EXACT)]

    at_price_zero = summarize(_study(*unpriced), SearchConfig(), ExportConfig(), TARGET)
    at_bar_one = summarize(_study(REFERENCE, FAST, EXACT), SearchConfig(min_top1_agreement=1.0), ExportConfig(), TARGET)

    assert at_price_zero.hypervolume > 0 and at_bar_one.hypervolume > 0


def test_a_serving_pick_s_reports_carry_its_load_curve(tmp_path) -> None:
    from autoopt.result import ServingProbe
    from autoopt.study.summary import write_reports

    curve = [ServingProbe(4.0, True, [], 3.9, {}, {}), ServingProbe(8.0, False, ["saturated"], 5.0, {}, {})]
    fast = replace(FAST, serving=replace(_serving(FAST, 4.0).serving, load_curve=curve))
    s = summarize(_study(_serving(REFERENCE, 1.0), fast), SearchConfig(objective="serving"),
                  ExportConfig(pick="fastest"), TARGET)

    files = {p.name for p in write_reports(s, SearchConfig(objective="serving"), tmp_path)}

    assert {"load_curve.md", "load_curve.png"} <= files
    assert "| 8.00 | no | 5.00 | - |" in (tmp_path / "load_curve.md").read_text()
    assert "load_curve.md" not in {p.name for p in write_reports(summarize(_study(REFERENCE, FAST), SearchConfig(),
                                                                           ExportConfig(), TARGET), SearchConfig(), tmp_path / "latency")}


def test_the_trials_the_vs_fp32_line_divides_are_named_when_timed_on_a_busy_machine() -> None:
    busy_reference = replace(REFERENCE, speed=replace(REFERENCE.speed, other_cpu_share=0.55))
    quiet_fast = replace(FAST, speed=replace(FAST.speed, other_cpu_share=0.05))
    s = summarize(_study(busy_reference, quiet_fast), SearchConfig(), ExportConfig(), TARGET)

    note = contended_note(s, confirmed=True) or ""

    assert "the reference (trial 0) was timed while other processes took 55% of the CPUs" in note
    assert "pick" not in note and "the side-by-side ratio below is the one to quote" in note
    assert "search.confirm_rounds > 0" in (contended_note(s, confirmed=False) or "")
    assert contended_note(summarize(_study(REFERENCE, FAST), SearchConfig(), ExportConfig(), TARGET), True) is None
    alone = summarize(_study(busy_reference), SearchConfig(), ExportConfig(), TARGET)  # the pick is the reference
    assert contended_note(alone, confirmed=False) == ("the reference (trial 0) was timed while other processes took "
                                                      "55% of the CPUs, so the trial figures above say as much about "
                                                      "that work as about the candidates: rerun on a quiet machine")


def test_the_hypervolume_is_also_given_as_a_share_of_the_box_under_its_reference_point() -> None:
    s = summarize(_study(REFERENCE, FAST), SearchConfig(), ExportConfig(), TARGET)
    ref_latency, ref_cost, bar_loss = s.hv_reference
    # FAST alone on the front: (ref_latency - 20) x (ref_cost - 0.2) x (bar_loss - 0.04) of a box ref_latency x ...
    share = (ref_latency - 20.0) * (ref_cost - 0.2) * (bar_loss - 0.04) / (ref_latency * ref_cost * bar_loss)

    assert box_share(s) == f" = {share:.1%} of the box from 0 to the reference point"
    assert box_share(replace(s, hv_reference=(-5.0, ref_cost, bar_loss))) == ""  # -capacity: no box from 0
