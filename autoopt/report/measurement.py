"""One measurement as a table a person reads in a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoopt.config.serde import to_dict
from autoopt.result import MeasureResult, Percentiles, Profile, contended


def _pct(p: Percentiles, cv_within_shape: float | None) -> str:
    # Noise is the cv across repeats of one shape; `p.cv` also holds the spread between shapes.
    noise = "" if cv_within_shape is None else f", cv within shape {cv_within_shape:.1%}"
    return f"p50 {p.p50:9.2f}  p90 {p.p90:9.2f}  p99 {p.p99:9.2f}  (n={p.n}{noise})"


def _contention(share: float | None) -> str:
    if share is None:
        return ""
    if contended(share):
        return (f"; CONTENDED: other processes took {share:.0%} of the CPUs meanwhile, so these timings say as much "
                "about that work as about this candidate: rerun on a quiet machine")
    return f"; other processes took {share:.0%} of the CPUs meanwhile"


def _perplexity(p: float) -> str:
    return f"{p:.2f}" if p < 1e6 else f"{p:.3g}"  # a random-weight model's is astronomically large


def measurement_table(r: MeasureResult) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in to_dict(r.candidate).items())
    s, m, a, cost = r.speed, r.memory, r.accuracy, r.cost
    build = "cached" if r.build.cached else f"built in {r.build.seconds:.1f}s"
    caveat = f" — {r.model['accuracy']}" if r.model.get("accuracy") else ""  # e.g. a random-weight shape model
    lines = [
        f"candidate   {knobs}",
        f"target      {r.target}   model {r.model.get('name')} ({r.model.get('key')})",
        f"build       {' -> '.join(r.build.steps) or '(none: loads the model folder)'}; {build}",
        f"batch       {r.runtime.batch_size} rows, {r.runtime.threads} threads, {s.runs} timed requests in "
        f"{s.seconds:.1f}s (warm){_contention(s.other_cpu_share)}",
        f"TTFT ms     {_pct(s.ttft_ms, s.ttft_cv_within_shape_median)}",
        f"TPOT ms     {_pct(s.tpot_ms, s.tpot_cv_within_shape_median)}",
        f"e2e ms      {_pct(s.e2e_ms, s.e2e_cv_within_shape_median)}",
        f"throughput  {s.output_tokens_per_s:.1f} output tokens/s (all rows)",
        f"cold start  load {s.load_s:.2f}s"
        + (f" (of which compiling {s.compile_s:.1f}s"
           + {True: ", from inductor's cache", False: ", from scratch", None: ""}[s.compile_cache_warm] + ")"
           if s.compile_s is not None else "")
        + f", warm-up '{s.warmup}' {s.warmup_s:.2f}s, "
        f"first request {s.cold_first_request_ms:.1f} ms (the workload's first prompt and output length)",
        f"memory      peak RSS {m.peak_rss_mb:.0f} MiB"
        + (f", device peak {m.device_peak_mb:.0f} MiB" if m.device_peak_mb is not None else "")
        + f", artifact {m.artifact_mb:.1f} MiB on disk",
        f"accuracy    top-1 agreement {a.top1_agreement:.4f}, "
        + ("" if a.sampled_agreement is None else f"sampled agreement {a.sampled_agreement:.4f}, ")
        + f"KL(ref||cand) {a.kl_mean:.3e} nats, "
        f"perplexity {_perplexity(a.perplexity)} vs reference {_perplexity(a.reference_perplexity)} "
        f"({a.tokens} positions){caveat}",
        f"decode      greedy prefix agreement {a.decode_prefix_agreement:.3f}, token agreement "
        f"{a.decode_token_agreement:.3f} ({a.decode_tokens} tokens)"
        + ("" if a.decode_self_agreement is None else f", self-agreement {a.decode_self_agreement:.3f}") + caveat,
        f"cost        ${cost.usd_per_1m_output_tokens:.4f} per 1M output tokens at ${cost.price_per_hour}/h ({cost.target})",
    ]
    if r.roofline is not None:
        rf = r.roofline
        lines.append(
            f"roofline    {rf.bytes_per_step / 1e6:.1f} MB per decode step x {rf.steps_per_s:.0f} steps/s = "
            f"{rf.efficiency:.0%} of {rf.bandwidth_gb_per_s:.1f} GB/s"
            + (f" ({note})" if (note := rf.note()) else "")
        )
    if r.serving is not None and r.serving.other_cpu_share is not None:
        lines.append(f"serving     capacity {r.serving.capacity_rps:.2f} req/s, searched in {r.serving.probes} probes"
                     f"{_contention(r.serving.other_cpu_share)}")
    if r.profile is not None:
        lines.append(f"profile     {bottlenecks(r.profile)}")
    return "\n".join(lines)


def bottlenecks(profile: Profile, top: int = 3) -> str:
    """The top op types of each phase by share, in one line: where the time goes."""
    if profile.unavailable:
        return f"none ({profile.unavailable})"
    # An op's share is of op time; `accounted` says how much of the phase that op time is (an engine can spend
    # most of a step outside any op it reports).
    return "; ".join(
        f"{phase.phase} (ops {phase.accounted:.0%} of it): "
        + ", ".join(f"{op.op} {op.share:.0%}" for op in phase.top[:top])
        for phase in profile.phases
    )


def coldstart_table(starts: Sequence[Any]) -> str:
    """Cold start per warm-up strategy (`autoopt.jobs.coldstart.ColdStart`), one fresh process each."""
    shapes = list(starts[0].first_request_ms)
    head = ["warm-up", "load s", "of it compiling", "warm-up s", "ready s", *[f"first {s} ms" for s in shapes],
            "peak RSS MiB"]
    rows = [head]
    for c in starts:
        firsts = [f"{c.first_request_ms[s]:.1f}" for s in shapes]
        compiling = "-" if c.compile_s is None else (
            f"{c.compile_s:.1f}s" + {True: " (cache)", False: " (scratch)", None: ""}[c.compile_cache_warm])
        rows.append([c.warmup, f"{c.load_s:.2f}", compiling, f"{c.warmup_s:.2f}", f"{c.ready_s:.2f}", *firsts,
                     f"{c.peak_rss_mb:.0f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["cold start (each strategy in a fresh process; first request of each batch x prompt x output shape)"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
