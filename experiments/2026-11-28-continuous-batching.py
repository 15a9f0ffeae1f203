"""Continuous batching (serving_batching=continuous) against group batching, interleaved in one process: the
capacity of one loaded candidate (torch with a dynamic KV cache, torch_compiled or ort) under workload `serve`'s
classes and SLOs, each search `--rounds` times per setting, the order alternating from round to round.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-28-continuous-batching.py [--rounds 3]
        [--engine torch|torch_compiled|ort] [--quant none] [--prompts 64,128] [--outputs 8,16] [--max-batch 4]

One JSON line per search: the capacity, and at that rate the occupancy and each class's e2e and TTFT p99.
With `--rates 12,18,24` it runs no search: one probe (warm-up, then judged traffic) per rate and setting, per round,
and prints what each probe measured.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.registry import engine_class
from autoopt.models import load_corpus
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.serving.measure import measure_serving
from autoopt.serving.runner import engine_system, warm_up

SERVE = ServingConfig(rate_rps=8.0, warmup_s=2.0, duration_s=6.0, peak_rate_rps=40.0, max_queue_delay_ms=5.0,
                      policy="strict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="torch", choices=("torch", "torch_compiled", "ort"),
                        help="torch (dynamic KV cache), torch_compiled (compile_mode=default, its static cache) or ort")
    parser.add_argument("--quant", default="none", help="the engine's quant: none, int8_dynamic or bf16 (torch), "
                        "none, int8_weight or int4 (torch_compiled, ort)")
    parser.add_argument("--prompts", default="64,128", help="prompt lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--outputs", default="8,16", help="output lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--rates", default="", help="fixed offered rates (requests/s) instead of a capacity search")
    args = parser.parse_args()
    prompts, outputs = ([int(n) for n in a.split(",")] for a in (args.prompts, args.outputs))
    cache = Path.home() / ".cache" / "autoopt"
    folder = resolve_model(ModelConfig(), cache).path
    knobs = {"torch": {"kv_cache": "dynamic"}, "torch_compiled": {"compile_mode": "default"}, "ort": {}}[args.engine]
    candidate = CandidateConfig(engine=args.engine, quant=args.quant, **knobs)
    built = run_pipeline(folder, "builtin", plan(candidate, "cpu"), cache)
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=max(prompts) + max(outputs), max_batch=args.max_batch)
    engine = engine_class(args.engine).load(built.artifact, candidate, runtime)
    text = " ".join(load_corpus().heldout)
    tokens = np.asarray(AutoTokenizer.from_pretrained(folder)(text)["input_ids"], dtype=np.int64)
    rates = [float(x) for x in args.rates.split(",") if x]
    for r in range(args.rounds):
        for batching in (("group", "continuous") if r % 2 == 0 else ("continuous", "group")):
            cfg = replace(SERVE, max_batch=args.max_batch, batching=batching)
            if rates:
                warm_up(engine, tokens, prompts, cfg.max_batch, stream=batching == "continuous")
                system = engine_system(engine, cfg, tokens, prompts, outputs)
                for rate in rates:
                    report = system(rate)
                    print(json.dumps({"round": r, "batching": batching, "rate_rps": rate,
                                      "utilization": report.utilization, "occupancy": report.occupancy,
                                      "saturated": report.saturated,
                                      "classes": {c.name: {"e2e_p99_ms": c.e2e.p99, "ttft_p99_ms": c.ttft.p99,
                                                           "e2e_p50_ms": c.e2e.p50, "attainment": c.attainment,
                                                           "completed": c.completed, "offered": c.offered}
                                                  for c in report.classes}}), flush=True)
                continue
            result = measure_serving(engine, cfg, tokens, prompts, outputs, 1.0)
            row = {"round": r, "batching": batching, "capacity_rps": result.capacity_rps,
                   "converged": result.converged, "occupancy": result.occupancy, "probes": result.probes,
                   "classes": {name: {"e2e_p99_ms": c.e2e_p99_ms, "ttft_p99_ms": c.ttft_p99_ms,
                                      "attainment": c.attainment} for name, c in result.classes.items()},
                   "curve": [(p.rate_rps, p.holds, round(p.completed_rps, 2), round(p.utilization, 3), p.why_not)
                             for p in result.load_curve]}
            print(json.dumps(row), flush=True)
    engine.close()


if __name__ == "__main__":
    main()
