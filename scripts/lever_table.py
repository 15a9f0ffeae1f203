"""The int4 accuracy levers, measured on the built-in model: teacher-forced top-1 agreement, KL and
perplexity against the fp32 torch reference, artifact size, and decode speed relative to default
int4 (ort_genai), interleaved over repeats so that the machine's speed swings hit every variant alike.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/lever_table.py [--repeats 5] [--only NAME ...]

Prints one Markdown table. Builds go through the cached pipeline (~/.cache/autoopt/builds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from autoopt.accuracy.metrics import fidelity
from autoopt.accuracy.reference import ensure_reference, teacher_forced_logits
from autoopt.config.schema import CandidateConfig, ModelConfig, WorkloadConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.models.source import resolve_model
from autoopt.passes.ort_static import calibration_settings
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.registry import PASSES, PassInfo, PassStep

# Until the registry carries the static pass (the lead adds this line to autoopt/passes/registry.py).
PASSES.setdefault("ort_int8_static", PassInfo("autoopt.passes.ort_static", ("onnxruntime", "onnx", "tokenizers")))

PROMPT_LEN, NEW_TOKENS = 128, 32
CPU = dict(device="cpu", threads=2)


def _genai(precision: str, **levers: object) -> tuple[str, list[PassStep]]:
    return "ort_genai", [PassStep("genai_build", {"precision": precision, "execution_provider": "cpu", **levers})]


def _static(method: str, samples: int) -> tuple[str, list[PassStep]]:
    settings = {"method": method, "samples": samples, **calibration_settings()}
    export = PassStep("onnx_export", {"device": "cpu", "dtype": "fp32"})
    return "ort", [export, PassStep("ort_int8_static", settings)]


VARIANTS: dict[str, tuple[str, list[PassStep]]] = {
    "genai fp32": _genai("fp32"),
    "genai int8": _genai("int8"),
    "int4 default (block 32)": _genai("int4"),
    "int4 rtn": _genai("int4", algo="rtn"),
    "int4 k_quant": _genai("int4", algo="k_quant"),
    "int4 k_quant_last": _genai("int4", algo="k_quant_last"),
    "int4 k_quant_mixed": _genai("int4", algo="k_quant_mixed"),
    "int4 lm_head fp32": _genai("int4", lm_head="fp32"),
    "int4 lm_head int8": _genai("int4", lm_head="int8"),
    "int4 mixed_layers int8": _genai("int4", mixed_layers="int8"),
    "int4 asymmetric": _genai("int4", symmetric=False),
    "int4 block 128": _genai("int4", block_size=128),
    "int4 embeddings int4": _genai("int4", embeddings="int4"),
    "int4 lm_head fp32 + k_quant": _genai("int4", algo="k_quant", lm_head="fp32"),
    "ort fp32": ("ort", [PassStep("onnx_export", {"device": "cpu", "dtype": "fp32"})]),
    "ort int8 static minmax 32": _static("minmax", 32),
    "ort int8 static entropy 32": _static("entropy", 32),
    "ort int8 static percentile 32": _static("percentile", 32),
    "ort int8 static minmax 8": _static("minmax", 8),
    "ort int8 static minmax 128": _static("minmax", 128),
}
BASELINE = "int4 default (block 32)"


def _load(engine: str, artifact: Path, max_length: int) -> Engine:
    runtime = RuntimeOptions(max_length=max_length, max_batch=4, **CPU)
    if engine == "ort":
        from autoopt.engines.ort.engine import OrtEngine

        return OrtEngine.load(artifact, CandidateConfig(engine="ort"), runtime)
    from autoopt.engines.ort_genai.engine import GenaiEngine

    return GenaiEngine.load(artifact, CandidateConfig(engine="ort_genai"), runtime)


def _decode_tokens_per_s(engine: Engine, prompt: np.ndarray) -> float:
    stamps = []
    for _ in engine.generate(prompt, NEW_TOKENS):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved speed repeats; 0 skips speed")
    parser.add_argument("--windows", type=int, default=8, help="held-out windows (the chat workload's: 8)")
    parser.add_argument("--window-len", type=int, default=128, help="tokens per window (the chat workload's: 128)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to measure (default: all)")
    args = parser.parse_args()
    names = [n for n in VARIANTS if args.only is None or n in args.only or n == BASELINE]

    cache = Path(os.environ.get("AUTOOPT_CACHE", Path.home() / ".cache" / "autoopt"))
    model = resolve_model(ModelConfig(), cache)
    workload = WorkloadConfig(name="chat", eval_windows=args.windows, eval_window_len=args.window_len)
    reference = ensure_reference(model, workload, cache).load()
    ids, prompt = reference["ids"], reference["stream"][None, :PROMPT_LEN].astype(np.int64)
    max_length = max(ids.shape[1], PROMPT_LEN + NEW_TOKENS)

    rows: dict[str, dict[str, object]] = {}
    engines: dict[str, Engine] = {}
    for name in names:
        engine_name, steps = VARIANTS[name]
        build = run_pipeline(model.path, model.key, steps, cache)
        artifact = Path(build.artifact)
        engines[name] = _load(engine_name, artifact, max_length)
        fid = fidelity(reference["logits"], teacher_forced_logits(engines[name], ids), ids)
        size = sum(f.stat().st_size for f in artifact.glob("model.onnx*")) / 1e6
        rows[name] = {"fid": fid, "mb": size, "build_s": build.build_seconds}
        print(f"built {name}: top-1 {fid.top1_agreement:.3f} KL {fid.kl_mean:.2e}", flush=True)

    ratios: dict[str, list[float]] = {n: [] for n in names}
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for engine in engines.values() if args.repeats else ():
        _decode_tokens_per_s(engine, prompt)  # warm-up
    for _ in range(args.repeats):
        this_round = {n: _decode_tokens_per_s(engines[n], prompt) for n in names}
        for n in names:
            speeds[n].append(this_round[n])
            ratios[n].append(this_round[n] / this_round[BASELINE])
    for engine in engines.values():
        engine.close()

    ref_ppl = rows[BASELINE]["fid"].reference_perplexity
    print(f"\nbuilt-in model {model.key}; {ids.shape[0]}x{ids.shape[1]} held-out tokens; fp32 ppl {ref_ppl:.1f}; "
          f"decode = {NEW_TOKENS} greedy tokens after a {PROMPT_LEN}-token prompt, batch 1, {CPU['threads']} threads, "
          f"{args.repeats} interleaved repeats\n")  # fmt: skip
    print("| variant | top-1 | KL | ppl | MB | decode tok/s (median) | speed vs default int4: median [min, max] |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for n in names:
        fid, r = rows[n]["fid"], sorted(ratios[n])
        speed = "- | -"
        if r:
            speed = f"{statistics.median(speeds[n]):.0f} | {statistics.median(r):.2f} [{r[0]:.2f}, {r[-1]:.2f}]"
        quality = f"{fid.top1_agreement:.3f} | {fid.kl_mean:.1e} | {fid.perplexity:.1f}"
        print(f"| {n} | {quality} | {rows[n]['mb']:.1f} | {speed} |")


if __name__ == "__main__":
    main()
