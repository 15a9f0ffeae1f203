"""Chunked prefill (serving_prefill_chunk) under continuous batching, interleaved in one process: one loaded
candidate (torch with a dynamic KV cache, torch_compiled, or ort) serves workload `serve`'s classes and SLOs at fixed
offered rates, each prompt prefilled whole or in parts of each `--chunks` size, the order of the settings rotating
from round to round.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-chunked-prefill.py [--rounds 3]
        [--engine torch|ort|torch_compiled] [--compile-mode default] [--quant none] [--prompts 64,128]
        [--outputs 8,16] [--max-batch 4] [--chunks 0,32,64] [--rates 8,12,16]

One JSON line per probe (2 s of warm-up traffic, then 6 s judged, as a capacity probe offers): per class the p99 of
end-to-end latency, TTFT, TPOT (each request's (last token - first token) / (tokens - 1)) and each request's largest
inter-token latency, the attainment, and the engine's utilization. With `--capacity` it runs one capacity search per
setting and round instead. `--workload stream` serves conf/workload/stream.yaml's traffic, classes and lengths.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-chunked-prefill.py --stall 1024 [--model builtin]

`--stall L` measures what chunking changes, without traffic: two rows decode (32-token prompts, `--stall-new` tokens
each) when a prompt of L tokens joins at their third step; one JSON line per run with the running row's largest and
median gap between two tokens, the joiner's time from its join to its first token, and the time until the running
rows' last token (the work chunking adds). `--model qwen2_0_5b_shape` runs Qwen2-0.5B's shape (random weights: speed
only).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from autoopt.config.load import to_typed
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig, WorkloadConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.base import Engine
from autoopt.engines.registry import engine_class
from autoopt.models import load_corpus
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.serving.batcher import ContinuousBatch
from autoopt.serving.measure import measure_serving
from autoopt.serving.runner import engine_system, warm_up
from autoopt.serving.scheduler import ServingRequest

SERVE = ServingConfig(rate_rps=8.0, warmup_s=2.0, duration_s=6.0, peak_rate_rps=40.0, policy="strict",
                      batching="continuous")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="torch", choices=("torch", "ort", "torch_compiled"))
    parser.add_argument("--compile-mode", default="default", help="torch_compiled's compile_mode (none: eager loop)")
    parser.add_argument("--quant", default="none", help="the engine's quant: none, int8_dynamic or bf16 (torch), "
                        "none, int8_weight or int4 (ort)")
    parser.add_argument("--prompts", default="64,128", help="prompt lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--outputs", default="8,16", help="output lengths (conf/workload/serve.yaml's)")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--chunks", default="0,32,64", help="prefill chunk sizes to compare (0: whole)")
    parser.add_argument("--rates", default="8,12,16", help="fixed offered rates (requests/s)")
    parser.add_argument("--capacity", action="store_true", help="a capacity search per setting instead of the rates")
    parser.add_argument("--stall", type=int, default=0, help="the joiner's prompt length: measure stalls, no traffic")
    parser.add_argument("--stall-new", type=int, default=40, help="--stall: tokens each running row decodes")
    parser.add_argument("--model", default="builtin", help="conf/model: builtin or qwen2_0_5b_shape")
    parser.add_argument("--workload", default="", help="conf/workload/<name>.yaml's traffic, classes and lengths "
                        "(its prompts and outputs replace --prompts and --outputs) instead of serve's")
    args = parser.parse_args()
    prompts, outputs, chunks = ([int(n) for n in a.split(",")] for a in (args.prompts, args.outputs, args.chunks))
    serve = SERVE
    if args.workload:
        workload = to_typed(OmegaConf.load(Path(__file__).parents[1] / "conf" / "workload" / f"{args.workload}.yaml"),
                            WorkloadConfig)
        serve = replace(workload.serving, policy="strict", batching="continuous")
        prompts, outputs = list(workload.prompt_lengths), list(workload.output_lengths)
    cache = Path.home() / ".cache" / "autoopt"
    model = to_typed(OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / f"{args.model}.yaml"), ModelConfig)
    resolved = resolve_model(model, cache)
    folder = resolved.path
    knobs = {"torch": {"kv_cache": "dynamic"}, "ort": {}, "torch_compiled": {"compile_mode": args.compile_mode}}[
        args.engine]
    candidate = CandidateConfig(engine=args.engine, quant=args.quant, **knobs)
    built = run_pipeline(folder, resolved.key, plan(candidate, "cpu"), cache)
    longest = max(max(prompts) + max(outputs), args.stall + 2, 32 + args.stall_new)
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=longest, max_batch=args.max_batch)
    engine = engine_class(args.engine).load(built.artifact, candidate, runtime)
    text = " ".join(load_corpus().heldout)
    builtin = resolve_model(ModelConfig(), cache).path  # the shape model has no tokenizer of its own
    tokens = np.asarray(AutoTokenizer.from_pretrained(builtin)(text)["input_ids"], dtype=np.int64)
    if args.stall:
        for r in range(args.rounds):
            for chunk in chunks[r % len(chunks):] + chunks[: r % len(chunks)]:
                print(json.dumps({"round": r, "chunk": chunk, **stall(engine, tokens, args.stall, chunk,
                                                                      args.stall_new)}), flush=True)
        engine.close()
        return
    rates = [float(x) for x in args.rates.split(",") if x]
    for r in range(args.rounds):
        for chunk in chunks[r % len(chunks):] + chunks[: r % len(chunks)]:
            cfg = replace(serve, max_batch=args.max_batch, prefill_chunk=chunk)
            if args.capacity:
                result = measure_serving(engine, cfg, tokens, prompts, outputs, 1.0)
                failed = [[p.rate_rps, *p.why_not] for p in result.load_curve if not p.holds]
                print(json.dumps({"round": r, "chunk": chunk, "capacity_rps": result.capacity_rps,
                                  "converged": result.converged, "failed": failed,
                                  "classes": {name: {"e2e_p99_ms": c.e2e_p99_ms, "ttft_p99_ms": c.ttft_p99_ms,
                                                     "itl_max_p99_ms": c.itl_max_p99_ms, "attainment": c.attainment}
                                              for name, c in result.classes.items()}}), flush=True)
                continue
            warm_up(engine, tokens, prompts, cfg.max_batch, stream=True, prefill_chunk=chunk)
            system = engine_system(engine, cfg, tokens, prompts, outputs)
            for rate in rates:
                report = system(rate)
                print(json.dumps({"round": r, "chunk": chunk, "rate_rps": rate, "utilization": report.utilization,
                                  "saturated": report.saturated,
                                  "classes": {c.name: {"e2e_p99_ms": c.e2e.p99, "ttft_p99_ms": c.ttft.p99,
                                                       "tpot_p99_ms": c.tpot.p99, "itl_max_p99_ms": c.itl_max.p99,
                                                       "attainment": c.attainment,
                                                       "completed": c.completed, "offered": c.offered}
                                              for c in report.classes}}), flush=True)
    engine.close()


def stall(engine: Engine, tokens: np.ndarray, prompt_len: int, chunk: int, new: int) -> dict[str, float]:
    """Two running rows (32-token prompts, `new` tokens each); a `prompt_len` prompt joins at their third step."""
    times: dict[int, list[float]] = {0: [], 1: [], 2: []}
    joined: dict[int, float] = {}

    def on_token(request: ServingRequest, index: int, token: int, t: float) -> bool:
        times[request.id].append(t)
        return True

    def on_start(request: ServingRequest, t: float) -> None:
        joined[request.id] = t

    batch = ContinuousBatch(engine, 4, time.perf_counter, on_token, on_start=on_start, prefill_chunk=chunk)
    rows = [ServingRequest(i, "P0", 32, new, 0.0, tokens[64 * i : 64 * i + 32]) for i in range(2)]
    joiner = ServingRequest(2, "P3", prompt_len, 2, 0.0, tokens[1000 : 1000 + prompt_len])
    batch.join(rows)
    for _ in range(2):
        batch.step()
    batch.join([joiner])
    while batch.rows:
        batch.step()
    gaps = np.diff(times[0]) * 1e3
    return {"max_gap_ms": float(gaps.max()), "median_gap_ms": float(np.median(gaps)),
            "joiner_ttft_ms": (times[2][0] - joined[2]) * 1e3, "running_rows_ms": (times[0][-1] - times[0][0]) * 1e3}


if __name__ == "__main__":
    main()
