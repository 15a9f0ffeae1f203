"""What the sweep prints when it ends."""

from __future__ import annotations

import math

from autoopt.config.schema import SweepConfig
from autoopt.study.objectives import speed_objective
from autoopt.study.runner import SweepOutcome
from autoopt.study.summary import Summary, front_console, gains


def box_share(s: Summary) -> str:
    """The hypervolume as a share of the box between the origin and its reference point, a figure comparable
    across studies; none where an objective is not bounded below by 0 (the serving objective's -capacity)."""
    if min(s.hv_reference) <= 0:
        return ""
    return f" = {s.hypervolume / math.prod(s.hv_reference):.1%} of the box from 0 to the reference point"


def contended_note(s: Summary, confirmed: bool) -> str | None:
    """Which of the trials the "vs fp32" line divides (the reference, the pick) were timed on a busy machine."""
    roles = [("reference", s.reference)] + ([("pick", s.chosen)] if s.chosen.key != s.reference.key else [])
    busy = [f"the {role} (trial {p.key}) was timed while other processes took {r.busiest_share():.0%} of the CPUs"
            for role, p in roles if (r := s.records[p.key].result) is not None and r.contended()]
    if not busy:
        return None
    then = ("the side-by-side ratio below is the one to quote" if confirmed
            else "rerun on a quiet machine" if s.chosen.key == s.reference.key  # nothing to confirm against
            else "rerun on a quiet machine, or with search.confirm_rounds > 0")
    return "; ".join(busy) + f", so the trial figures above say as much about that work as about the candidates: {then}"


def print_outcome(o: SweepOutcome, cfg: SweepConfig) -> None:
    s = o.summary
    g = gains(s)
    lat = cfg.search.latency.replace("_", " ")
    print(front_console(s, cfg.search))
    agreement = "top-1 agreement" if cfg.workload.decoding.greedy else "sampled agreement"
    bars = f"{agreement} >= {cfg.search.min_top1_agreement}"
    if cfg.search.min_decode_prefix_agreement > 0:
        bars += f", decode prefix agreement >= {cfg.search.min_decode_prefix_agreement}"
    if cfg.search.min_decode_self_agreement > 0:
        bars += f", decode self-agreement >= {cfg.search.min_decode_self_agreement}"
    # 0 is common with the serving objective: the cost at the peak moves in whole replicas, often the reference's.
    none_better = "; 0: no feasible candidate beats the reference in all three at once" if s.hypervolume == 0 else ""
    print(f"\nstudy       {o.study_name}: {len(s.points)} distinct candidates measured, {len(s.feasible)} feasible "
          f"({bars}), hypervolume {s.hypervolume:.4g}{box_share(s)} "
          f"(reference point: fp32 {speed_objective(cfg.search)}, fp32 cost, accuracy-bar loss{none_better})")
    d = cfg.workload.decoding
    if not d.greedy:
        print(f"decoding    every timed row sampled (workload.decoding: temperature {d.temperature}, top_p {d.top_p}, "
              f"top_k {d.top_k or 'off'}); its host draws are in every speed figure, and the accuracy bar reads "
              "sampled agreement")
    print(f"chosen      trial {s.chosen.key}: {s.chosen.payload['candidate']}")
    print(f"why         {s.reason}")
    first = (f"{g['latency_x']:.2f}x lower {lat} latency" if "latency_x" in g
             else f"{g['capacity_x']:.2f}x the capacity (requests/s within every SLO)")
    print(f"vs fp32     {first}, {g['cost_x']:.2f}x lower cost per 1M output tokens, "
          f"{agreement} {1 - g['accuracy_loss']:.4f} (reference trial 0: {s.reference.payload['candidate']}; "
          "trial figures, taken minutes apart)")
    if note := contended_note(s, bool(o.confirmation)):
        print(f"contended   {note}")
    if o.confirmation:
        c = o.confirmation
        ref_batch, batch = c.batches
        across = "" if ref_batch == batch else (": across batch sizes, tokens/s includes what batching adds and "
                                                "the latency is per request batch")
        print(f"side by side {c.speedup} output tokens/s and {c.latency_gain} lower {lat} than the fp32 reference "
              f"(timed alternately, each run in a fresh process; batch {batch} against the reference's {ref_batch}"
              f"{across}; other processes took up to {c.other_cpu_share:.0%} of the CPUs"
              f"{', so the ratio is suspect: rerun on a quiet machine' if c.contended else ''})")
    print(f"bundle      {o.bundle}   (check it: python -m autoopt.bundle verify {o.bundle})")
    print(f"reports     {o.reports[0].parent}")
    print(f"MLflow UI   {o.ui_command}")
