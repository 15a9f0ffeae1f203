"""Batches whose free rows take other prompt lengths (serving_mix_lengths=true) against batches of one length,
interleaved in one process: the capacity of one loaded candidate under workload `serve`'s traffic (by default
prompts 64/128 tokens, outputs 8/16), each search `--rounds` times per setting, the order alternating from
round to round.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-28-mixed-length-batching.py [--rounds 3]
        [--prompts 64,128] [--outputs 8,16] [--rule shorter|lead-first-any|any]

`--rule` picks which requests fill a mixing batch: `shorter` is autoopt's scheduler as committed; the two
others replace its grouping here, for the earlier variants of the record.
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
from autoopt.serving.scheduler import Scheduler, ServingRequest

SERVE = ServingConfig(rate_rps=8.0, warmup_s=2.0, duration_s=6.0, peak_rate_rps=40.0, max_batch=4,
                      max_queue_delay_ms=5.0, policy="strict")


def _waiting(scheduler: Scheduler, lead: ServingRequest) -> list[ServingRequest]:
    return [r for q in scheduler._queues.values() for r in q.waiting if r is not lead]  # urgency, then age


def _any_length(scheduler: Scheduler, lead: ServingRequest, rows: int, credits: dict) -> list[ServingRequest]:
    """Any waiting request, in urgency order, whatever its length (with mixing on)."""
    if not scheduler.mix_lengths:
        return _lead_first_any(scheduler, lead, rows, credits)
    return _waiting(scheduler, lead)[:rows]


def _lead_first_any(scheduler: Scheduler, lead: ServingRequest, rows: int, credits: dict) -> list[ServingRequest]:
    """The lead's length first, then (with mixing on) any other length, longer ones included."""
    waiting = _waiting(scheduler, lead)
    same = [r for r in waiting if r.prompt_len == lead.prompt_len]
    other = [r for r in waiting if r.prompt_len != lead.prompt_len] if scheduler.mix_lengths else []
    return [*same, *other][:rows]


# Each rule stands in for Scheduler._fill (the rows after the lead; strict policy, so no credit is charged).
# At the commits the record names it was Scheduler._group, which returned the lead too.
RULES = {"shorter": Scheduler._fill, "lead-first-any": _lead_first_any, "any": _any_length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="ort_genai")
    parser.add_argument("--knobs", default='{"quant": "int8_weight", "quant_block_size": 128}')
    parser.add_argument("--prompts", default="64,128", help="prompt lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--outputs", default="8,16", help="output lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--rule", choices=list(RULES), default="shorter")
    args = parser.parse_args()
    prompts, outputs = ([int(n) for n in a.split(",")] for a in (args.prompts, args.outputs))
    Scheduler._fill = RULES[args.rule]
    cache = Path.home() / ".cache" / "autoopt"
    folder = resolve_model(ModelConfig(), cache).path
    candidate = CandidateConfig(engine=args.engine, **json.loads(args.knobs))
    built = run_pipeline(folder, "builtin", plan(candidate, "cpu"), cache)
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=max(prompts) + max(outputs), max_batch=4)
    engine = engine_class(args.engine).load(built.artifact, candidate, runtime)
    text = " ".join(load_corpus().heldout)
    tokens = np.asarray(AutoTokenizer.from_pretrained(folder)(text)["input_ids"], dtype=np.int64)
    rows = []
    for r in range(args.rounds):
        for mix in ((True, False) if r % 2 == 0 else (False, True)):
            result = measure_serving(engine, replace(SERVE, mix_lengths=mix), tokens, prompts, outputs, 1.0)
            at = next(p for p in result.load_curve if p.rate_rps == result.capacity_rps)
            rows.append({"round": r, "mix_lengths": mix, "capacity_rps": result.capacity_rps,
                         "converged": result.converged, "occupancy": result.occupancy,
                         "completed_rps_max": max(p.completed_rps for p in result.load_curve),
                         "utilization_at_capacity": at.utilization, "probes": len(result.load_curve),
                         "curve": [(p.rate_rps, p.holds, round(p.completed_rps, 2), round(p.utilization, 3),
                                    p.e2e_p99_ms, p.why_not) for p in result.load_curve]})
            print(json.dumps(rows[-1]), flush=True)
    engine.close()


if __name__ == "__main__":
    main()
