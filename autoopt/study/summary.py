"""After the trials: the front over every feasible complete trial of the study, its hypervolume,
the pick, the pictures and tables, and the exported bundle."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from autoopt import pareto
from autoopt.config.schema import ExportConfig, SearchConfig, TargetConfig
from autoopt.report.load_curve import load_curve_markdown, load_curve_png
from autoopt.report.measurement import bottlenecks
from autoopt.report.plots import front_3d_html, front_projections
from autoopt.report.tables import console_table, front_rows, to_csv, to_markdown
from autoopt.study.objectives import (
    constraints,
    hypervolume_reference,
    objective_labels,
    objectives,
    speed_objective,
)
from autoopt.study.record import TrialRecord, remeasured
from autoopt.study.trial import Known

log = logging.getLogger("autoopt.study")


class SweepError(RuntimeError):
    """The sweep cannot produce a result (reference failed, nothing feasible); the message says why."""


@dataclass(frozen=True)
class Summary:
    points: list[pareto.Point]  # every complete, distinct candidate
    feasible: list[pareto.Point]
    front: list[pareto.Point]
    reference: pareto.Point  # the fp32 torch reference (trial 0)
    hv_reference: tuple[float, float, float]
    hypervolume: float
    chosen: pareto.Point
    reason: str
    records: dict[str, TrialRecord]  # by trial number (as a string, the points' keys)
    # Trials whose artifacts the runner put back on disk as measured after the search (`with_artifacts`), and
    # those measured again there, in this run or an earlier one, because a rebuild's files differed (their records
    # hold the new figures).
    checked: frozenset[str] = frozenset()
    remeasured: frozenset[str] = frozenset()


def _point(number: int, record: TrialRecord, values: tuple[float, float, float], device: str) -> pareto.Point:
    r = record.result
    assert r is not None
    # The memory the target's limit is checked against (`objectives.constraints`): host RSS on a CPU target.
    memory = ("peak_rss_mb", r.memory.peak_rss_mb) if device == "cpu" else ("device_peak_mb", r.memory.device_peak_mb)
    payload = {
        "candidate": record.label,
        "output_tokens_per_s (all rows, warm)": r.speed.output_tokens_per_s,
        "top1": r.accuracy.top1_agreement,
        **({} if r.accuracy.sampled_agreement is None else {"sampled": r.accuracy.sampled_agreement}),
        "kl_mean (KL(ref‖cand), nats)": r.accuracy.kl_mean,
        memory[0]: memory[1],
    }
    return pareto.Point(str(number), values, payload)


def summarize(study: optuna.Study, search: SearchConfig, export: ExportConfig, target: TargetConfig) -> Summary:
    """The front of the study's distinct complete candidates. Objectives and feasibility are computed here
    from each trial's stored measurement under the current settings, never taken from the told values; a trial
    measured again after an earlier run's search (`keep_remeasured`) counts with its new figures."""
    records = {str(t.number): TrialRecord.read(t) for t in Known.of(study).complete.values()}
    again = {key: result for key, result in remeasured(study).items() if key in records}
    for key, result in again.items():
        records[key] = replace(records[key], result=result)
    return replace(summary_of(records, search, export, target), remeasured=frozenset(again))


def summary_of(
    records: dict[str, TrialRecord], search: SearchConfig, export: ExportConfig, target: TargetConfig
) -> Summary:
    """The front and pick of complete trials' records, keyed by trial number."""
    points, ok, broken = [], [], Counter[str]()
    for key, record in records.items():
        assert record.result is not None
        point = _point(int(key), record, objectives(record.result, search), target.device)
        points.append(point)
        missed = [name for name, v in constraints(record.result, search, target).items() if not v <= 0]
        broken.update(missed)
        if not missed:
            ok.append(point)
    if not records:
        raise SweepError("no trial completed; nothing to export")
    if not ok:  # a trial may break several
        counts = ", ".join(f"{n} broke {name}" for name, n in sorted(broken.items(), key=lambda kv: (-kv[1], kv[0])))
        raise SweepError(f"no complete trial meets every constraint: of {len(records)}, {counts}; nothing to export")
    reference = next((p for p in points if p.key == "0"), None)
    if reference is None:
        raise SweepError("the fp32 reference (trial 0) did not complete; see its reason in the log/MLflow")
    front = pareto.front(ok)
    # Volume dominated beyond the fp32 reference's latency (or capacity) and cost, and below the accuracy
    # bar's loss. A reference that held no SLO has no finite cost at the peak: the front's worst cost stands in.
    cost = reference.objectives[1]
    if not math.isfinite(cost):
        cost = max(p.objectives[1] for p in ok)
    hv_ref = hypervolume_reference(reference.objectives[0], cost, search)
    hv = pareto.hypervolume([p.objectives for p in front], hv_ref)
    # Distances from the front's best latency (capacity) and cost as fractions of that best value, accuracy
    # loss as a fraction of the bar's: a front whose losses span 0.004-0.005 must not weigh that spread like
    # a 2x latency difference, and a reference measured at a slow moment must not flatten the speed axis.
    best = [min(p.objectives[i] for p in front) for i in range(2)]
    scale = (abs(best[0]) or 1.0, abs(best[1]) or 1.0, max(hv_ref[2], 1e-3))
    speed = speed_objective(search)
    chosen, reason = pareto.pick(front, export.pick, export.weights, scale=scale, speed=speed)
    if export.pick in ("knee", "weights"):
        reason += f" ({speed} and cost as fractions of the front's best, accuracy loss of the bar's)"
    if export.pick == "fastest":
        close = len(pareto.contenders(front, export.runoff_margin)) - 1
        reason += (f"; no other front candidate within {export.runoff_margin:.0%} of it" if close == 0 else
                   f"; {close} other front candidate(s) within {export.runoff_margin:.0%} of it, "
                   + ("to be timed side by side" if runoff_due(search, export) else _no_runoff(search)))
    return Summary(points, ok, front, reference, hv_ref, hv, chosen, reason, records)


def runoff_due(search: SearchConfig, export: ExportConfig) -> bool:
    """Whether pick=fastest times the front candidates close to the fastest side by side after the trials."""
    return export.pick == "fastest" and search.objective == "latency" and search.confirm_rounds > 0


def _no_runoff(search: SearchConfig) -> str:
    if search.objective != "latency":
        return f"not timed side by side: with search.objective={search.objective} the trials' figures decide"
    return "not timed side by side (search.confirm_rounds=0): the trials' figures decide"


def write_reports(s: Summary, search: SearchConfig, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = objective_labels(search)
    rows = front_rows(s.front, names, chosen_key=s.chosen.key)
    md = folder / "front.md"
    md.write_text(to_markdown(rows) + "\n")
    where = folder / "bottlenecks.md"
    where.write_text(bottleneck_markdown(s) + "\n")
    labels = {p.key: f"{p.key}: {p.payload['candidate']}" for p in s.points}
    files = [
        to_csv(rows, folder / "front.csv"),
        md,
        where,
        front_projections(s.points, s.front, names, folder / "front.png", chosen_key=s.chosen.key,
                          feasible=s.feasible,
                          limits={2: (s.hv_reference[2], f"accuracy bar ({search.min_top1_agreement})")}),
        front_3d_html(s.points, s.front, names, folder / "front_3d.html", labels=labels, chosen_key=s.chosen.key),
    ]
    chosen = s.records[s.chosen.key].result
    if chosen is not None and chosen.serving is not None and chosen.serving.load_curve:
        curve = folder / "load_curve.md"
        curve.write_text(f"Trial {s.chosen.key} (chosen): {s.chosen.payload['candidate']}\n\n"
                         + load_curve_markdown(chosen.serving) + "\n")
        title = f"Load curve of the chosen candidate (trial {s.chosen.key}): {s.chosen.payload['candidate']}"
        files += [curve, load_curve_png(chosen.serving, folder / "load_curve.png", title)]
    return files


def bottleneck_markdown(s: Summary) -> str:
    """Where each front candidate's time goes (its runtime's profiler) and its decode roofline efficiency."""
    lines = [
        "| trial | candidate | where the time goes (per phase: ops' share of its profiled time, then each op "
        "type's share of op time) | roofline efficiency |",
        "|---|---|---|---:|",
    ]
    for p in s.front:
        r = s.records[p.key].result
        assert r is not None
        where = bottlenecks(r.profile) if r.profile else "not profiled"
        roof = "-" if r.roofline is None else f"{r.roofline.efficiency:.0%}" + (
            f" ({note})" if (note := r.roofline.note()) else "")
        lines.append(f"| {p.key} | {p.payload['candidate']} | {where} | {roof} |")
    return "\n".join(lines)


def front_console(s: Summary, search: SearchConfig) -> str:
    rows = front_rows(s.front, objective_labels(search), chosen_key=s.chosen.key)
    return console_table(rows, title=f"Pareto front ({len(s.front)} of {len(s.feasible)} feasible candidates)")


def gains(s: Summary) -> dict[str, Any]:
    """The pick against the fp32 reference, from the trials' own figures: how many times lower its latency
    (or higher its capacity, with the serving objective, where the first objective is -capacity) and cost."""
    ref, ch = s.reference.objectives, s.chosen.objectives
    cost_x = ref[1] / ch[1] if math.isfinite(ref[1]) and ch[1] > 0 else _unpriced_ratio(ref[1], ch[1])
    if ref[0] <= 0 and ch[0] < 0:  # -capacity
        return {"capacity_x": ch[0] / ref[0] if ref[0] < 0 else math.inf, "cost_x": cost_x, "accuracy_loss": ch[2]}
    return {"latency_x": ref[0] / ch[0], "cost_x": cost_x, "accuracy_loss": ch[2]}


def _unpriced_ratio(ref: float, chosen: float) -> float:
    """How many times lower the chosen cost is where a ratio cannot be taken: a target priced at 0 makes every
    cost 0 (unchanged), a reference that held no SLO has no finite cost (infinitely higher)."""
    return 1.0 if ref == chosen else math.inf
