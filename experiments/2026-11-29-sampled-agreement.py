"""Top-1 agreement against sampled agreement (`autoopt.accuracy.metrics.sampled_agreement`) for candidates near the
accuracy bar, teacher-forced on the default workload's held-out windows (workload `chat`: 8 windows of 128 tokens)
of the built-in model, each candidate's logits through its own engine, against the fp32 reference's cached logits.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-sampled-agreement.py

One JSON line per candidate: top-1 agreement, and sampled agreement under each decoding in DECODINGS. The figures
are deterministic for a given build and machine (no timing). Then one line per decoding for what computing it costs
on a real model's vocabulary: seconds for one 128-position window of synthetic logits of Qwen2's vocabulary size
(151,936; normal, scale 3, the candidate's the reference's plus noise), best of 3.
"""

from __future__ import annotations

import json
import timeit
from pathlib import Path

import numpy as np

from autoopt.accuracy.metrics import sampled_agreement
from autoopt.accuracy.reference import ensure_reference
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, DecodingConfig, ModelConfig, WorkloadConfig
from autoopt.engines.registry import engine_class
from autoopt.models.source import resolve_model
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan

CANDIDATES = {
    "ort_genai int4 (block 32)": CandidateConfig(engine="ort_genai", quant="int4"),
    "ort_genai int4 block 128": CandidateConfig(engine="ort_genai", quant="int4", quant_block_size=128),
    "ort int4 (block 32)": CandidateConfig(engine="ort", quant="int4"),
    "ort_genai int8_weight block 128": CandidateConfig(engine="ort_genai", quant="int8_weight", quant_block_size=128),
    "torch int8_dynamic": CandidateConfig(engine="torch", quant="int8_dynamic"),
}
DECODINGS = {
    "T1.0": DecodingConfig(temperature=1.0),
    "T0.8 top_p0.95": DecodingConfig(temperature=0.8, top_p=0.95),
    "T0.7 top_p0.9": DecodingConfig(temperature=0.7, top_p=0.9),
    "T0.7 top_k40": DecodingConfig(temperature=0.7, top_k=40),
    "T0.3": DecodingConfig(temperature=0.3),
}


def main() -> None:
    cache = Path.home() / ".cache" / "autoopt"
    model = resolve_model(ModelConfig(), cache)
    chat = WorkloadConfig(name="chat", prompt_lengths=[64, 128, 256], output_lengths=[32, 64])
    reference = ensure_reference(model, chat, cache).load()
    ids, ref_logits = reference["ids"], reference["logits"]
    runtime = RuntimeOptions(device="cpu", threads=2, max_length=256, max_batch=8)
    for label, candidate in CANDIDATES.items():
        built = run_pipeline(model.path, model.key, plan(candidate, "cpu"), cache)
        engine = engine_class(candidate.engine).load(built.artifact, candidate, runtime)
        logits = engine.logits(ids)
        engine.close()
        row = {"candidate": label, "positions": int(ids.size),
               "top1_agreement": round(float((ref_logits.argmax(-1) == logits.argmax(-1)).mean()), 4)}
        row |= {name: round(sampled_agreement(ref_logits, logits, d), 4) for name, d in DECODINGS.items()}
        print(json.dumps(row), flush=True)
    rng = np.random.default_rng(0)
    ref_window = (rng.normal(size=(1, 128, 151936)) * 3).astype(np.float32)
    cand_window = ref_window + (rng.normal(size=ref_window.shape) * 0.1).astype(np.float32)
    for name, d in DECODINGS.items():
        seconds = min(timeit.repeat(lambda d=d: sampled_agreement(ref_window, cand_window, d), number=1, repeat=3))
        print(json.dumps({"decoding": name, "vocab": 151936, "positions": 128, "seconds": round(seconds, 2)}),
              flush=True)


if __name__ == "__main__":
    main()
