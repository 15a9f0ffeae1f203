"""What each knob did, read from a search-benchmark ground truth: for every pair of grid candidates that
differ in one knob only (same engine, every other knob equal), the ratio of their latency and the
difference in accuracy, peak RSS and artifact size; per knob change (from the knob's default), the median
and range over its pairs.

    .venv/bin/python scripts/lever_effects.py workspace/searchbench/<truth>.json [--latency e2e_p90]

Every figure comes from one ground truth (one machine, one code version, candidates measured minutes
apart), so a ratio's range shows the machine's drift as well as the knob's effect on other settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from autoopt.config.knobs import knobs_of
from autoopt.config.schema import CandidateConfig

KNOBS = knobs_of(CandidateConfig)


def _latency(result: dict[str, Any], name: str) -> float:
    kind, pct = name.split("_")
    return float(result["speed"][f"{kind}_ms"][pct])


def pairs(entries: dict[str, dict[str, Any]]) -> dict[tuple[str, str, Any, Any], list[tuple[dict, dict]]]:
    """(engine, knob, value a, value b) -> pairs of (result with a, result with b), other knobs equal."""
    measured = [e for e in entries.values() if "result" in e]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    out: dict[tuple[str, str, Any, Any], list[tuple[dict, dict]]] = defaultdict(list)
    for e in measured:
        for name in e["params"]:
            if name == "engine":
                continue
            rest = tuple(sorted((k, json.dumps(v)) for k, v in e["params"].items() if k != name))
            groups[(name, rest)].append(e)
    for (name, _), members in groups.items():
        engine, knob = name.split(".", 1)
        default = json.dumps(KNOBS[knob].default)
        # the knob's default first, so each row reads "default → other"
        values = sorted({json.dumps(m["params"][name]) for m in members}, key=lambda v: (v != default, v))
        for i, a in enumerate(values):
            for b in values[i + 1 :]:
                ea = next(m for m in members if json.dumps(m["params"][name]) == a)
                eb = next(m for m in members if json.dumps(m["params"][name]) == b)
                out[(engine, knob, json.loads(a), json.loads(b))].append((ea["result"], eb["result"]))
    return out


def table(truth: Path, latency: str) -> str:
    entries = json.loads(truth.read_text())["entries"]
    rows = [
        f"| engine | knob: a → b | pairs | {latency} b/a: median [min, max] | top-1 b − a: median [min, max] | "
        "peak RSS b − a, MB | artifact b − a, MB |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for (engine, knob, a, b), found in sorted(pairs(entries).items(), key=lambda x: (x[0][0], x[0][1], str(x[0][2]))):
        ratio = [_latency(rb, latency) / _latency(ra, latency) for ra, rb in found]
        top1 = [rb["accuracy"]["top1_agreement"] - ra["accuracy"]["top1_agreement"] for ra, rb in found]
        rss = [rb["memory"]["peak_rss_mb"] - ra["memory"]["peak_rss_mb"] for ra, rb in found]
        disk = [rb["memory"]["artifact_mb"] - ra["memory"]["artifact_mb"] for ra, rb in found]
        rows.append(
            f"| {engine} | {knob}: {a} → {b} | {len(found)} | {statistics.median(ratio):.2f} "
            f"[{min(ratio):.2f}, {max(ratio):.2f}] | {statistics.median(top1):+.3f} [{min(top1):+.3f}, {max(top1):+.3f}] "
            f"| {statistics.median(rss):+.0f} | {statistics.median(disk):+.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("truth", type=Path, help="a ground-truth JSON written by python -m autoopt.searchbench")
    parser.add_argument("--latency", default="e2e_p90", help="{ttft,tpot,e2e}_{p50,p90,p99}")
    args = parser.parse_args()
    print(table(args.truth, args.latency))


if __name__ == "__main__":
    main()
