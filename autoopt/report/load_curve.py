"""The capacity search's runs as a load curve: each class's p99 of the figures it sets deadlines on (e2e, TTFT,
longest wait between two tokens) and the completed rate against the offered rate, as a Markdown table and a PNG.
Where the p99s cross their SLOs, and where completions stop following the offered rate, is the knee a serving
decision rests on."""

from __future__ import annotations

from pathlib import Path

from autoopt.config.serving import DEADLINES
from autoopt.result import ServingResult


def load_curve_markdown(serving: ServingResult) -> str:
    """One row per probe, sorted by offered rate: its completed rate, its utilization (busy: the share of the
    arrival window the engine spent running batches), and per class the p99 (ms) of each figure it sets a deadline
    on (e2e for a best-effort class) and, in brackets, the completed requests behind it."""
    columns = [(n, figure) for n, c in serving.classes.items() for figure, _ in c.judged]
    slos = "; ".join(f"{n} {c.deadlines}" for n, c in serving.classes.items())
    probe = "" if serving.warmup_s is None else (
        f" Each probe: {serving.warmup_s:g} s of warm-up traffic (served, not judged), then {serving.judged_s:g} s "
        + (f"(or long enough for {serving.min_judged} requests) " if serving.min_judged else "")
        + "whose requests the p99s count; busy counts both.")
    bracket = "bracketed within 5 %" if serving.converged else "probe budget ran out before 5 %"
    lines = [
        f"Capacity {serving.capacity_rps:.2f} requests/s (max_batch {serving.max_batch}, {bracket}). "
        f"Classes: {slos}.{probe}",
        "",
        "| offered req/s | holds | completed req/s | busy | " + " | ".join(f"{n} {f} p99 ms (n)" for n, f in columns)
        + " | why not |",
        "|---:|---|---:|---:|" + "---:|" * len(columns) + "---|",
    ]
    for p in sorted(serving.load_curve, key=lambda p: p.rate_rps):
        cells = [
            "-" if p.p99(f).get(n) is None else f"{p.p99(f)[n]:.0f} ({p.completed.get(n, 0)})" for n, f in columns
        ]
        why = "; ".join(p.why_not).replace("|", "/")
        busy = "-" if p.utilization is None else f"{p.utilization:.1%}"  # 100.4 % fails: not rounded to 100 %
        lines.append(
            f"| {p.rate_rps:.2f} | {'yes' if p.holds else 'no'} | {p.completed_rps:.2f} | {busy} | " + " | ".join(cells)
            + f" | {why} |"
        )
    return "\n".join(lines)


def load_curve_png(serving: ServingResult, path: Path, title: str) -> Path:
    """Left: the p99 of each figure each class sets a deadline on (e2e for a best-effort class) against the offered
    rate (log scale), one colour per class and one line style per figure, its deadline dashed in the same colour.
    Right: completed against offered rate, with the line where they are equal. Filled markers held every
    SLO, hollow ones did not; the dotted line is the capacity."""
    from matplotlib.figure import Figure  # the object API needs no display and leaves pyplot's backend alone
    from matplotlib.ticker import FuncFormatter

    curve = sorted(serving.load_curve, key=lambda p: p.rate_rps)
    rates = [p.rate_rps for p in curve]
    fig = Figure(figsize=(12.8, 5.0), dpi=120, layout="constrained")
    latency, rate = fig.subplots(1, 2)
    cycle = [f"C{i}" for i in range(10)]
    styles = dict(zip(DEADLINES.values(), (("-", "o"), ("-.", "s"), (":", "^")), strict=True))  # line, marker
    for i, (name, cls) in enumerate(serving.classes.items()):
        colour = cycle[i % len(cycle)]
        for figure, deadline in cls.judged:
            line, marker = styles[figure]
            points = [(p.rate_rps, p.p99(figure)[name], p.holds) for p in curve if p.p99(figure).get(name) is not None]
            if points:
                label = name if figure == DEADLINES["slo_ms"] else f"{name} {figure}"
                latency.plot([x for x, _, _ in points], [y for _, y, _ in points], color=colour, lw=1, ls=line,
                             label=label)
                for x, y, holds in points:
                    latency.scatter([x], [y], s=36, marker=marker, color=colour if holds else "white",
                                    edgecolors=colour, zorder=3)
            if deadline > 0:
                latency.axhline(deadline, color=colour, ls="--", lw=0.8)
    rate.plot(rates, rates, color="#9a9a9a", ls="--", lw=0.8, label="completed = offered")
    rate.plot(rates, [p.completed_rps for p in curve], color="C0", lw=1)
    for p in curve:
        rate.scatter([p.rate_rps], [p.completed_rps], s=36, color="C0" if p.holds else "white", edgecolors="C0", zorder=3)
    for ax in (latency, rate):
        if serving.capacity_rps > 0:
            ax.axvline(serving.capacity_rps, color="black", ls=":", lw=1, label=f"capacity {serving.capacity_rps:.2f}")
        ax.set_xlabel("offered requests/s (open loop)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    latency.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    latency.yaxis.set_major_formatter(plain)
    latency.yaxis.set_minor_formatter(plain)
    latency.set_ylabel("p99 ms (e2e, TTFT: from the scheduled send); dashed: SLO")
    latency.set_title("p99 per class; hollow: some SLO missed", fontsize=10)
    rate.set_ylabel("completed requests/s")
    rate.set_title("completed against offered", fontsize=10)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
