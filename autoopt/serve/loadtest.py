"""`python -m autoopt.serve.loadtest BUNDLE [--url URL] [--rate R] [--capacity]`: send the bundle's measured traffic
to a server over HTTP and judge it as the capacity search judged the bundle in process (`autoopt.serve.http_load`).

One probe at `--rate` (default: the capacity the manifest records) exits 0 only where it holds, printed beside the
manifest's figures at its capacity; `--capacity` searches the capacity over HTTP as the sweep searched it in
process, and exits 0 where some rate held. The manifest's figures were measured when the bundle was exported, on its
machine and in process: they are there to read beside, not a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoopt.bundle.layout import REFERENCE
from autoopt.bundle.manifest import read_manifest, recorded_decoding, recorded_serving
from autoopt.config.errors import ConfigError
from autoopt.config.schema import DecodingConfig
from autoopt.config.serving import DEADLINE_STEMS, DEADLINES, ServingConfig
from autoopt.serve.http_load import Endpoint, LoadTestError, http_system
from autoopt.serving.capacity import find_capacity, violations
from autoopt.serving.metrics import ClassMetrics, ServingReport

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PROBES = 8  # as the sweep's capacity search (autoopt.serving.measure)


@dataclass(frozen=True)
class MeasuredLoad:
    """What the bundle's capacity search offered, read from its manifest and `verify/reference.npz`."""

    cfg: ServingConfig
    tokens: np.ndarray  # the held-out text its prompts were cut from
    prompt_lengths: list[int]
    output_lengths: list[int]
    decoding: DecodingConfig | None  # None: greedy
    metrics: dict[str, Any]  # the manifest's figures, by name


def measured_load(bundle: Path) -> MeasuredLoad:
    manifest = read_manifest(bundle)
    workload = manifest["workload"]
    cfg = replace(recorded_serving(manifest), max_batch=manifest["candidate"].get("serving_max_batch", 4))
    with np.load(bundle / REFERENCE) as z:
        tokens = z["stream"]
    decoding = recorded_decoding(workload)
    return MeasuredLoad(cfg, tokens, list(workload["prompt_lengths"]), list(workload["output_lengths"]),
                        None if decoding.greedy else decoding,
                        {k: v["value"] for k, v in manifest.get("metrics", {}).items()})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m autoopt.serve.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="the bundle folder whose measured traffic to send")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server's root (default {DEFAULT_URL})")
    parser.add_argument("--model", default=None, help="the model id to send (default: none)")
    parser.add_argument("--rate", type=float, default=None,
                        help="requests/s of the probe, or where --capacity starts (default: the manifest's capacity)")
    parser.add_argument("--capacity", action="store_true", help="search the highest rate that holds, over HTTP")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of judged traffic per probe (default: the manifest's duration_s)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of traffic before it, served but not judged (default: the manifest's warmup_s)")
    parser.add_argument("--max-probes", type=int, default=MAX_PROBES, help=f"--capacity: probes at most ({MAX_PROBES})")
    parser.add_argument("--json", type=Path, default=None, help="write every probe's report here")
    parser.add_argument("--priority", action=argparse.BooleanOptionalAction, default=True,
                        help="send each class's priority as the request's `priority` (vLLM refuses it unless started "
                        "with --scheduling-policy priority)")
    args = parser.parse_args(argv)
    for name in ("rate", "duration"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name}={getattr(args, name)} must be positive")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup={args.warmup} must be 0 or more")
    if args.max_probes < 1:
        parser.error(f"--max-probes={args.max_probes} must be at least 1")
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        parser.error(f"--json={args.json}: give a file in an existing folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        load = measured_load(args.bundle)
    except (OSError, KeyError, TypeError, ValueError, ConfigError) as e:
        print(f"error: bundle {args.bundle} cannot be read: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    recorded = load.metrics.get("serving.capacity_rps")
    rate = args.rate or recorded
    if not rate:
        print(f"error: the manifest of {args.bundle} records no capacity (it was measured one request at a time, or "
              "no rate held its SLOs); give --rate", file=sys.stderr)
        return 2
    cfg = replace(load.cfg, duration_s=args.duration or load.cfg.duration_s,
                  warmup_s=load.cfg.warmup_s if args.warmup is None else args.warmup)
    system = http_system(Endpoint(args.url, args.model, args.priority), cfg, load.tokens, load.prompt_lengths,
                         load.output_lengths, load.decoding)
    reports: list[ServingReport] = []

    def probe(r: float) -> ServingReport:
        reports.append(system(r))
        return reports[-1]

    try:
        if args.capacity:
            found = find_capacity(probe, start_rps=rate, min_attainment=cfg.min_attainment, max_probes=args.max_probes)
        else:
            report = probe(rate)
    except LoadTestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.json is not None:
            args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    if args.capacity:
        for p in found.probes:
            print(f"{p.rate_rps:8.3g} req/s  {'holds' if p.holds else 'fails: ' + '; '.join(p.why_not)}")
        bound = "" if found.converged else " (a lower bound: the probes ran out before bracketing it within 5 %)"
        print(f"capacity over HTTP at {args.url}: {found.rate_rps:.3g} req/s{bound}; " + _recorded(recorded))
        if found.report is not None:
            print(format_report(found.report, load.metrics))
        return 0 if found.rate_rps > 0 else 1
    print(format_report(report, load.metrics))
    why = violations(report, cfg.min_attainment)
    print(f"holds at {rate:.3g} req/s over HTTP" if not why else f"does not hold at {rate:.3g} req/s over HTTP: "
          + "; ".join(why))
    return 0 if not why else 1


def _recorded(capacity: float | None) -> str:
    return ("the manifest records no capacity" if not capacity else
            f"the manifest's, in process when the bundle was exported: {capacity:.3g} req/s")


def format_report(report: ServingReport, metrics: dict[str, Any]) -> str:
    """Per class, what the client saw and, under it, what the manifest records at its capacity."""
    e = report.extra
    late = e.get("send_lateness_ms_p99")
    lines = [f"{report.rate_rps:.3g} req/s over HTTP at {e.get('url')}: {report.warmup_s:g} s warm-up "
             f"({report.warmup_offered} requests, not judged), then {report.overall.offered} judged requests; the "
             f"client sent requests up to {'?' if late is None else f'{late:.1f}'} ms late (p99); drain "
             f"{report.drain_s:.2f} s" + (f"; saturated: {report.saturation_reason}" if report.saturated else "")]
    if e.get("engine_counts") == "not exposed":
        lines.append("engine busy time: the server's /metrics does not expose it, so utilization is not judged")
    else:
        lines.append(f"utilization {report.utilization:.2f} (engine busy {report.busy_s:.2f} s, from the server's "
                     f"/metrics), {report.batches} engine calls of {report.mean_batch_rows:.2f} rows on average (the "
                     "whole probe, warm-up and anything left after a saturated stop included)")
    if e.get("client_cpu_s") is not None:
        server = e.get("server_cpu_s")
        lines.append(f"CPU over the probe's {e['probe_s']:.1f} s: "
                     + ("" if server is None else f"server {server:.1f} s (its /metrics), ")
                     + f"this client {e['client_cpu_s']:.1f} s; {e['cpus_here']} CPUs here, which a client on the "
                     "server's machine takes from it")
    header = f"{'class':<13}{'deadlines':<26}{'offered':>8}{'done':>6}{'429':>5}{'attain':>8}" + "".join(
        f"{DEADLINES[name] + ' p99':>17}" for name in DEADLINES)
    lines += [header, "-" * len(header)]
    for c in report.classes:
        lines.append(_row(c, "HTTP", c.offered, c.completed, c.rejected, c.attainment,
                          [c.bounded(name).p99 for name in DEADLINES]))
        recorded = {k.rsplit(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"serving.classes.{c.name}.")}
        if recorded:
            lines.append(_row(c, "manifest", recorded.get("offered"), recorded.get("completed"),
                              recorded.get("rejected"), recorded.get("attainment"),
                              [recorded.get(f"{DEADLINE_STEMS[name]}_p99_ms") for name in DEADLINES]))
    return "\n".join(lines)


def _row(c: ClassMetrics, source: str, offered: Any, done: Any, rejected: Any, attainment: Any,
         p99s: list[float | None]) -> str:
    bounds = ", ".join(f"{DEADLINES[name]} {getattr(c, name):g}" for name in DEADLINES if getattr(c, name) > 0)
    label = f"{c.name} {source}"
    cells = "".join(f"{'-' if v is None else f'{v:.1f} ms':>17}" for v in p99s)
    count = "".join(f"{'-' if v is None else v:>{w}}" for v, w in ((offered, 8), (done, 6), (rejected, 5)))
    attain = "-" if attainment is None else f"{attainment:.3f}"
    return f"{label:<13}{bounds or 'best effort':<26}{count}{attain:>8}{cells}"


if __name__ == "__main__":
    sys.exit(main())
