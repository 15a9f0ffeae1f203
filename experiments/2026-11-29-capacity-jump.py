"""The capacity search's first phase, raising the rate by the last probe's utilization (`next_up`) against plain
doubling, interleaved in one process on one loaded candidate under workload `serve`'s classes and SLOs: each
search `--rounds` times per rule, the order alternating from round to round, within the sweep's probe budget.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-capacity-jump.py [--rounds 3]
        [--engine torch|ort|ort_genai] [--quant none] [--batching group|continuous] [--max-batch 4]

One JSON line per search: the rule, the probes (rate, held, utilization), the capacity, whether the bracket
converged within the budget, and the search's wall time.

With `--synthetic` it loads nothing: both rules search systems whose utilization is the rate over a saturation
rate and whose P0 breaks its SLO above a given utilization, one line per system.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

import autoopt.serving.capacity as capacity
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.engines.registry import engine_class
from autoopt.models import load_corpus
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.serving.measure import MAX_PROBES, measure_serving
from autoopt.serving.metrics import DONE, RequestRecord, ServingReport, summarize

SERVE = ServingConfig(rate_rps=8.0, warmup_s=2.0, duration_s=6.0, peak_rate_rps=40.0, max_queue_delay_ms=5.0,
                      policy="strict")
RULES = {"double": lambda rate, utilization: rate * 2, "jump": capacity.next_up}


def synthetic(saturation_rps: float, slo_breaks_above: float) -> capacity.System:
    classes = [ServingClassConfig("P0", 0, 200.0, 0.5, 8), ServingClassConfig("P3", 3, 0.0, 0.5, 8)]

    def run(rate: float) -> ServingReport:
        e2e = 0.1 if rate / saturation_rps <= slo_breaks_above else 0.5
        records = [RequestRecord(i, "P0", float(i), DONE, i, i + 0.01, i + e2e, 10) for i in range(20)]
        return summarize(records, classes, [1] * 20, max_batch=1, duration_s=20.0 / rate + 0.1, rate_rps=rate,
                         drain_s=0.1, busy_s=20.0 / saturation_rps)

    return run


def compare_synthetic() -> None:
    for slo_breaks_above in (0.97, 0.85, 0.7, 0.4):
        for saturation in (12, 25, 47, 70, 100, 150, 230):
            row: dict[str, object] = {"saturation_rps": saturation, "slo_breaks_above_utilization": slo_breaks_above}
            for rule, step in RULES.items():
                capacity.next_up = step
                found = capacity.find_capacity(synthetic(saturation, slo_breaks_above), start_rps=SERVE.rate_rps,
                                               max_probes=MAX_PROBES)
                row[rule] = {"probes": len(found.probes), "converged": found.converged,
                             "capacity_rps": round(found.rate_rps, 2)}
            print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="ort", choices=("torch", "ort", "ort_genai"))
    parser.add_argument("--quant", default="none")
    parser.add_argument("--batching", default="group", choices=("group", "continuous"))
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--synthetic", action="store_true", help="search synthetic systems only")
    args = parser.parse_args()
    if args.synthetic:
        compare_synthetic()
        return
    prompts, outputs = [64, 128], [8, 16]  # conf/workload/serve.yaml's
    cache = Path.home() / ".cache" / "autoopt"
    folder = resolve_model(ModelConfig(), cache).path
    candidate = CandidateConfig(engine=args.engine, quant=args.quant)
    built = run_pipeline(folder, "builtin", plan(candidate, "cpu"), cache)
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=max(prompts) + max(outputs), max_batch=args.max_batch)
    engine = engine_class(args.engine).load(built.artifact, candidate, runtime)
    text = " ".join(load_corpus().heldout)
    tokens = np.asarray(AutoTokenizer.from_pretrained(folder)(text)["input_ids"], dtype=np.int64)
    cfg = replace(SERVE, max_batch=args.max_batch, batching=args.batching)
    for r in range(args.rounds):
        for rule in (("double", "jump") if r % 2 == 0 else ("jump", "double")):
            capacity.next_up = RULES[rule]
            started = time.perf_counter()
            result = measure_serving(engine, cfg, tokens, prompts, outputs, 1.0)
            print(json.dumps({"round": r, "rule": rule, "capacity_rps": round(result.capacity_rps, 2),
                              "converged": result.converged, "probes": result.probes,
                              "seconds": round(time.perf_counter() - started, 1),
                              "load_curve": [(round(p.rate_rps, 2), p.holds, round(p.utilization, 3))
                                             for p in result.load_curve]}), flush=True)


if __name__ == "__main__":
    main()
