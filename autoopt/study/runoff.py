"""`export.pick=fastest`: the fastest candidate that meets the bar, with "fastest" settled side by side.

Trial figures are taken minutes apart on machines whose speed swings, so front candidates whose latency
is within `export.runoff_margin` of the best cannot be ranked from them. Those contenders are timed again
in interleaved rounds (each run in a fresh process). The anchor is the most accurate contender; another
contender wins only if it was faster than the anchor in every round (by more than `export.runoff_min_gain`, 0 by
default), and among such winners the one with the largest median gain is picked. Otherwise the anchor is: speed the
measurements cannot resolve is not worth accuracy. Two equally fast contenders pass "faster in every one of n
rounds" by chance with probability 2^-n (1 in 8 at the default 3 rounds); a minimum gain or more rounds lowers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autoopt import pareto
from autoopt.jobs.confirm import Ratio, SpeedSample


@dataclass(frozen=True)
class Runoff:
    contenders: list[pareto.Point]
    anchor: pareto.Point  # the most accurate contender
    gains: dict[str, Ratio]  # per contender key (anchor excluded): anchor latency / its latency, per round
    chosen: pareto.Point
    reason: str


def anchor_of(contenders: Sequence[pareto.Point]) -> pareto.Point:
    """The most accurate contender; ties go to the lower latency, then the lower key."""
    return min(contenders, key=lambda p: (p.objectives[2], p.objectives[0], int(p.key) if p.key.isdigit() else 0))


def decide(contenders: Sequence[pareto.Point], samples: Sequence[Sequence[SpeedSample]], latency: str,
           min_gain: float = 0.0) -> Runoff:
    """`samples[i]`: contender i's runs by round (from `autoopt.jobs.confirm.side_by_side`)."""
    anchor = anchor_of(contenders)
    base = samples[contenders.index(anchor)]
    gains = {
        p.key: Ratio([a.latency_ms[latency] / s.latency_ms[latency] for a, s in zip(base, runs, strict=True)])
        for p, runs in zip(contenders, samples, strict=True)
        if p is not anchor
    }
    winners = [p for p in contenders if p is not anchor and gains[p.key].low > 1.0 + min_gain]
    rounds = len(base)
    by = f" by more than {min_gain * 100:g} %" if min_gain else ""
    if not winners:
        reason = (f"fastest within the bar: trial {anchor.key}, the most accurate of {len(contenders)} candidates "
                  f"within the runoff margin; none was faster than it{by} in every one of {rounds} interleaved "
                  "rounds")
        return Runoff(list(contenders), anchor, gains, anchor, reason)
    chosen = max(winners, key=lambda p: gains[p.key].median)
    reason = (f"fastest within the bar: trial {chosen.key} was faster than trial {anchor.key} (the most accurate of "
              f"{len(contenders)} candidates within the runoff margin){by} in every one of {rounds} interleaved "
              f"rounds, {latency} {gains[chosen.key]}")
    return Runoff(list(contenders), anchor, gains, chosen, reason)
