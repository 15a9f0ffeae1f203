"""A/B of inductor's C++ wrapper in the torch_compiled engine on the CPU (experiments/2026-11-27-cpp-wrapper.md).

Speed: one process loads each quant twice, with the Python wrapper (`compile_options` called with
cpp_wrapper=False) and with the C++ one (what the engine does on the CPU since this record); built-in model,
batch 1, 128-token random-id prompts, 32 new tokens; interleaved rounds, order reversed on alternate rounds;
the ratio is C++/Python decode tokens/s (1 / TPOT) per round. Greedy tokens are compared with eager torch fp32.
Compile: with --compile, each arm is also loaded in a fresh process over an empty inductor cache (its own
directory), alternating arms, and the load's compile seconds are printed.

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD .venv/bin/python experiments/2026-11-27-cpp-wrapper.py [rounds] [--compile]
"""

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import autoopt.engines.torch_compiled.engine as compiled
from autoopt.bench.latency import time_request
from autoopt.bench.requests import Request
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.torch.engine import TorchEngine
from autoopt.models.source import resolve_model

PROMPT, NEW = 128, 32
QUANTS = ("none", "bf16", "int8_weight", "int4")
ARMS = ("python", "cpp")
_options = compiled.compile_options


def load(quant: str, arm: str) -> compiled.TorchCompiledEngine:
    compiled.compile_options = lambda mode, tuning, cpp: _options(mode, tuning, cpp and arm == "cpp")
    try:
        return compiled.TorchCompiledEngine.load(folder, CandidateConfig(engine="torch_compiled", quant=quant), runtime)
    finally:
        compiled.compile_options = _options


folder = resolve_model(ModelConfig(), Path.home() / ".cache" / "autoopt").path
runtime = RuntimeOptions(device="cpu", threads=2, max_length=PROMPT + NEW, max_batch=1, batch_size=1)

if len(sys.argv) > 2 and sys.argv[1] == "--child":  # one cold load: --child QUANT ARM
    engine = load(sys.argv[2], sys.argv[3])
    print(f"{sys.argv[2]} {sys.argv[3]}: compile {engine.compile_seconds():.1f} s, cache {engine.compile_cache}")
    sys.exit(0)

rounds = int(next((a for a in sys.argv[1:] if a.isdigit()), 25))
eager = TorchEngine.load(folder, CandidateConfig(engine="torch"), runtime)
engines = {(quant, arm): load(quant, arm) for quant in QUANTS for arm in ARMS}
rng = np.random.default_rng(0)
prompts = [rng.integers(1, 8192, size=(1, PROMPT), dtype=np.int64) for _ in range(4)]


def greedy(engine, ids):
    return np.stack(list(engine.generate(ids, NEW)), 1)


reference = [greedy(eager, p) for p in prompts]
for key, engine in engines.items():
    same = sum(bool((greedy(engine, p) == r).all()) for p, r in zip(prompts, reference, strict=True))
    print(key, f"greedy tokens identical to eager fp32 on {same}/4 prompts")
for quant in QUANTS:
    diff = np.abs(engines[(quant, "python")].logits(prompts[0]) - engines[(quant, "cpp")].logits(prompts[0])).max()
    print(quant, "max |logit diff| C++ vs Python wrapper (teacher-forced)", diff)
speed = {key: [] for key in engines}
for r in range(rounds):
    for key in list(engines) if r % 2 == 0 else list(reversed(engines)):
        speed[key].append(1 / time_request(engines[key], Request(prompts[r % 4], NEW)).tpot_s)
for quant in QUANTS:
    ratios = [b / a for a, b in zip(speed[(quant, "python")], speed[(quant, "cpp")], strict=True)]
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    print(f"{quant}: Python wrapper {statistics.median(speed[(quant, 'python')]):.0f} tok/s, C++ "
          f"{statistics.median(speed[(quant, 'cpp')]):.0f} tok/s; C++/Python per round p10/p50/p90 "
          f"{p10:.3f}/{p50:.3f}/{p90:.3f} ({rounds} interleaved rounds)")

if "--compile" in sys.argv:
    for rep in range(2):
        for quant in ("none", "int4"):
            for arm in ARMS if rep == 0 else reversed(ARMS):
                with tempfile.TemporaryDirectory(prefix="autoopt_cppw_") as cache:
                    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                    out = subprocess.run([sys.executable, __file__, "--child", quant, arm], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    print("cold", out.strip().splitlines()[-1])
