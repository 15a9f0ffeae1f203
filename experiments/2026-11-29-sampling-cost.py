"""What a sampling row costs next to a greedy one: the same candidate, the same prompts, `generate` with every row
greedy against every row sampling (temperature 0.8, top_p 0.95, a seed per row), interleaved round by round in one
process, the order alternating. Built-in model, CPU.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-sampling-cost.py [--rounds 7] [--threads 2]

One JSON line per (candidate, batch): per-token decode time (TPOT: the steps after the first token, per step) and
time to first token (the prefill and its draw), median and range over the rounds for each mode, and the sampled /
greedy TPOT ratio of each round (median and range). Each round's tokens are 32 new ones after 128-token prompts
cut from held-out text. Every candidate and batch size runs in this one process, one after the other.

Then one line per setting for the draw alone (`RowSampler.choose`, best of 5 repeats of 50 draws) on logits of
Qwen2's vocabulary size, 151,936, drawn from a normal distribution: scale 4 (the likeliest token ~0.33) and scale 1
(flat, as a random-weights model gives). The built-in model's vocabulary is 8,192.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.registry import engine_class
from autoopt.engines.sampling import RowSampler, Sampling
from autoopt.models import load_corpus
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan

CANDIDATES = {
    "ort_genai int8_weight (the default sweep's pick)": CandidateConfig(
        engine="ort_genai", quant="int8_weight", quant_block_size=128, graph_opt="basic", kv_cache="static"),
    "torch fp32 (the reference)": CandidateConfig(engine="torch"),
}
PROMPT_LEN, NEW = 128, 32


def prompts(folder: Path, batch: int) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = np.asarray(tokenizer(" ".join(load_corpus().heldout[:8]))["input_ids"], dtype=np.int64)
    return np.stack([ids[300 * r : 300 * r + PROMPT_LEN] for r in range(batch)])


def timed(engine, ids: np.ndarray, sampling) -> tuple[float, float]:
    stamps = [time.perf_counter()]
    for _ in engine.generate(ids, NEW, sampling=sampling):
        stamps.append(time.perf_counter())
    return stamps[1] - stamps[0], (stamps[-1] - stamps[1]) / (NEW - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cache = Path.home() / ".cache" / "autoopt"
    model = resolve_model(ModelConfig(), cache)
    for label, candidate in CANDIDATES.items():
        built = run_pipeline(model.path, model.key, plan(candidate, "cpu"), cache)
        for batch in (1, 4):
            runtime = RuntimeOptions(device="cpu", threads=args.threads, batch_size=batch, max_length=256,
                                     max_batch=batch)
            engine = engine_class(candidate.engine).load(built.artifact, candidate, runtime)
            ids = prompts(model.path, batch)
            modes = {"greedy": None, "sampled": [Sampling(0.8, 0.95, 0, seed=r) for r in range(batch)]}
            for sampling in modes.values():  # warm-up
                timed(engine, ids, sampling)
            got: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
            for r in range(args.rounds):
                for mode in list(modes)[:: 1 if r % 2 == 0 else -1]:
                    got[mode].append(timed(engine, ids, modes[mode]))
            engine.close()
            row: dict[str, object] = {"candidate": label, "batch": batch, "rounds": args.rounds}
            for mode, runs in got.items():
                ttft, tpot = np.array(runs).T * 1e3
                row[mode] = {"tpot_ms_median": round(float(np.median(tpot)), 3),
                             "tpot_ms_range": [round(float(tpot.min()), 3), round(float(tpot.max()), 3)],
                             "ttft_ms_median": round(float(np.median(ttft)), 3)}
            ratios = np.array([s[1] / g[1] for g, s in zip(got["greedy"], got["sampled"], strict=True)])
            row["tpot_sampled_over_greedy"] = {"median": round(float(np.median(ratios)), 3),
                                               "range": [round(float(ratios.min()), 3), round(float(ratios.max()), 3)]}
            print(json.dumps(row), flush=True)
    for scale in (4.0, 1.0):
        logits = (np.random.default_rng(0).normal(size=151936) * scale).astype(np.float32)
        for sampling in (Sampling(0.8), Sampling(0.8, 0.95), Sampling(0.8, 1.0, 50), Sampling(0.8, 0.9, 50)):
            sampler = RowSampler(sampling)
            best = min(timeit.repeat(lambda s=sampler, x=logits: s.choose(x), number=50, repeat=5)) / 50
            print(json.dumps({"vocab": logits.size, "logit_scale": scale, "temperature": sampling.temperature,
                              "top_p": sampling.top_p, "top_k": sampling.top_k, "draw_ms": round(best * 1e3, 3)}))


if __name__ == "__main__":
    main()
