"""Eager torch against the torch_compiled engine, interleaved, on the trained built-in model: decode
tokens/s and TTFT at batch 1 (prompt 128, 32 new tokens), plus greedy-token agreement with eager.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/compiled_decode_bench.py [--rounds 25]

Every engine is loaded (and compiled) first; then each round runs one request on every engine, the
order reversed on alternate rounds. Ratios are taken per round against eager, so the machine's speed
swings shift both sides of a ratio alike; the median and p10/p90 of those ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from autoopt.bench.latency import time_request
from autoopt.bench.requests import Request
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.base import Engine
from autoopt.engines.torch.engine import TorchEngine
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
from autoopt.models.source import resolve_model

PROMPT, NEW = 128, 32
EAGER = "eager torch fp32"
VARIANTS = {"compiled fp32": "none", "compiled bf16": "bf16", "compiled int8": "int8_weight", "compiled int4": "int4"}


def greedy(engine: Engine, ids: np.ndarray) -> np.ndarray:
    return np.stack(list(engine.generate(ids, NEW)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    folder = resolve_model(ModelConfig(), Path.home() / ".cache" / "autoopt").path
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=PROMPT + NEW, max_batch=1, batch_size=1)
    engines: dict[str, Engine] = {EAGER: TorchEngine.load(folder, CandidateConfig(engine="torch"), runtime)}
    for label, quant in VARIANTS.items():
        engine = TorchCompiledEngine.load(folder, CandidateConfig(engine="torch_compiled", quant=quant), runtime)
        print(f"{label}: compiled in {engine.compile_seconds():.1f}s")
        engines[label] = engine
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 8192, size=(1, PROMPT), dtype=np.int64) for _ in range(4)]
    reference = [greedy(engines[EAGER], p) for p in prompts]
    for label, engine in engines.items():
        same = [bool((greedy(engine, p) == ref).all()) for p, ref in zip(prompts, reference, strict=True)]
        print(f"{label}: greedy tokens identical to eager on {sum(same)}/{len(same)} prompts")
    speed = {label: [] for label in engines}
    ttft = {label: [] for label in engines}
    for r in range(args.rounds):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for label in order:
            timing = time_request(engines[label], Request(prompts[r % len(prompts)], NEW))
            speed[label].append(1 / timing.tpot_s)
            ttft[label].append(timing.ttft_s)
    for label in engines:
        ratios = [a / b for a, b in zip(speed[label], speed[EAGER], strict=True)]
        p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
        print(f"{label:18s} decode tok/s median {statistics.median(speed[label]):7.1f} · ratio vs eager "
              f"p10/p50/p90 {p10:.2f}/{p50:.2f}/{p90:.2f} · TTFT median {1e3 * statistics.median(ttft[label]):.1f} ms "
              f"({args.rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
