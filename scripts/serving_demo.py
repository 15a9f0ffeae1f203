"""Serving under load on the built-in model with the torch engine: batch 1 vs dynamic batching at a rate
near batch-1 capacity (same seed, same arrivals), then a 3x overload run, optionally a capacity search.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/serving_demo.py [--rate R] [--duration S] [--capacity] [--out F]

Prints one table per run (per-class e2e p50/p99, TTFT p99, attainment, goodput, rejections) and writes
every report as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.models import load_corpus
from autoopt.models.source import resolve_model
from autoopt.serving.capacity import cost_at_load, find_capacity
from autoopt.serving.loadgen import expected_output_tokens, make_arrivals
from autoopt.serving.metrics import ServingReport
from autoopt.serving.runner import engine_system, run_open_loop, warm_up

PRICE_PER_HOUR = 0.0416  # illustrative CPU price; the sweep uses the target's price_per_hour


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0 = 0.9 x measured batch-1 capacity")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[64])
    parser.add_argument("--output-lengths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--overload", type=float, default=3.0, help="overload factor for the last run")
    parser.add_argument("--threads", type=int, default=1, help="1: on a shared 2-core VM, 2 threads swing 10x")
    parser.add_argument("--capacity", action="store_true", help="also search capacity for batch 1 and batch 4")
    parser.add_argument("--out", type=Path, default=Path("serving_demo.json"))
    return parser.parse_args()


def heldout_tokens(folder: Path) -> np.ndarray:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return np.asarray(tokenizer.encode("\n\n".join(load_corpus().heldout)).ids, dtype=np.int64)


def service_time_s(engine: Engine, tokens: np.ndarray, prompts: list[int], outputs: list[int]) -> float:
    """Mean batch-1 end-to-end time over the workload's (prompt, output) pairs, 3 runs each."""
    times = []
    for p in prompts:
        for n in outputs:
            ids = tokens[None, 1000 : 1000 + p]
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in engine.generate(ids, n):
                    pass
                times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def table(title: str, r: ServingReport) -> str:
    lines = [f"### {title}",
             f"offered {r.rate_rps:.2f} req/s · max_batch {r.max_batch} · {r.batches} batches · occupancy "
             f"{r.occupancy:.2f} · {r.output_tokens_per_s:.0f} out tok/s · {r.duration_s:.1f} s"
             + (f" · SATURATED ({r.saturation_reason})" if r.saturated else ""),
             "",
             "| class | SLO ms | offered | done | rejected | unfinished | e2e p50 | e2e p99 | TTFT p99 | queue p99 "
             "| attainment | goodput req/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in (*r.classes, r.overall):
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        slo = "best effort" if c.slo_ms <= 0 else f"{c.slo_ms:.0f}"
        lines.append(f"| {c.name} | {slo} | {c.offered} | {c.completed} | {c.rejected} | {c.unfinished} | "
                     f"{ms(c.e2e.p50)} | {ms(c.e2e.p99)} | {ms(c.ttft.p99)} | {ms(c.queue.p99)} | "
                     f"{c.attainment:.3f} | {c.goodput_rps:.2f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    cache = Path(os.environ.get("AUTOOPT_CACHE", Path.home() / ".cache" / "autoopt"))
    folder = resolve_model(ModelConfig(), cache).path
    max_length = max(args.prompt_lengths) + max(args.output_lengths)
    runtime = RuntimeOptions(device="cpu", threads=args.threads, batch_size=1, max_length=max_length, max_batch=8)
    engine = engine_class("torch").load(folder, CandidateConfig(engine="torch"), runtime)
    tokens = heldout_tokens(folder)
    warm_up(engine, tokens, args.prompt_lengths, 4)
    service = service_time_s(engine, tokens, args.prompt_lengths, args.output_lengths)
    rate = args.rate or 0.9 / service
    print(f"batch-1 service time {service * 1e3:.1f} ms -> batch-1 capacity ~{1 / service:.2f} req/s; rate {rate:.2f}")
    base = ServingConfig(rate_rps=rate, duration_s=args.duration, max_requests=10_000, seed=args.seed,
                         max_queue_delay_ms=10.0)
    results: dict[str, object] = {"service_time_ms": service * 1e3, "rate_rps": rate, "args": vars(args) | {"out": str(args.out)}}
    runs = [("batch 1 near capacity", replace(base, max_batch=1), rate),
            ("batch 4 near capacity", replace(base, max_batch=4), rate),
            (f"batch 1 at {args.overload:g}x overload", replace(base, max_batch=1), rate * args.overload),
            (f"batch 4 at {args.overload:g}x overload", replace(base, max_batch=4), rate * args.overload)]
    for title, cfg, r in runs:
        arrivals = make_arrivals(cfg, tokens, args.prompt_lengths, args.output_lengths, r)
        report = run_open_loop(engine, cfg, arrivals, rate_rps=r)
        print(table(title, report) + "\n", flush=True)
        results[title] = report.to_dict()
    if args.capacity:
        for batch in (1, 4):
            cfg = replace(base, max_batch=batch, duration_s=min(args.duration, 12.0))
            cap = find_capacity(engine_system(engine, cfg, tokens, args.prompt_lengths, args.output_lengths),
                                start_rps=rate, min_attainment=cfg.min_attainment, max_probes=8)
            line = f"capacity max_batch={batch}: {cap.rate_rps:.2f} req/s ({len(cap.probes)} probes" \
                   f"{', converged' if cap.converged else ', NOT converged'})"
            if cap.report is not None:
                cost = cost_at_load(cap, peak_rate_rps=10.0, price_per_hour=PRICE_PER_HOUR,
                                    tokens_per_request=expected_output_tokens(args.output_lengths))
                line += (f"; peak 10 req/s needs {cost.replicas} replicas, ${cost.usd_per_day:.2f}/day, "
                         f"${cost.usd_per_million_tokens_at_capacity:.3f} per 1M output tokens at capacity")
            print(line, flush=True)
            for p in cap.probes:
                print(f"  probe {p.rate_rps:.2f} req/s: {'holds' if p.holds else 'fails: ' + '; '.join(p.why_not)}")
            results[f"capacity batch {batch}"] = cap.to_dict()
    engine.close()
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
