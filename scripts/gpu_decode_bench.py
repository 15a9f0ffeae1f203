"""HF eager bf16 against the compiled decode loop and its quantized variants, on one card in one run, for the
built-in model and the Qwen2-0.5B shape: decode tokens/s, TTFT, TPOT, peak GPU memory, compile time, roofline
efficiency and greedy-token agreement with eager, at batch 1.

    HF_HUB_OFFLINE=1 python scripts/gpu_decode_bench.py --out bench.json [--rounds 10]
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/gpu_decode_bench.py --device cpu --rounds 2 --out smoke.json

Engines per model: `eager bf16` (the torch engine, quant=bf16: HF's own forward and cache), `compiled bf16
<mode>` (torch_compiled, quant=bf16) for each of --compile-modes, and `compiled <quant>` for every quant the
torch_compiled engine declares for the device beyond the float casts (int8_weight, int4, and fp8 where the
engine offers it; --quants picks some), compiled with the first of --compile-modes, and `compiled <quant> tuned`
for each of --tuned (compile_tuning=coordinate_descent). An engine that fails to load is recorded with
its error and the run goes on.

Method: a model's engines are loaded (and compiled) one after the other; each one's peak GPU memory is
torch.cuda.max_memory_allocated over its load and one request, minus what was allocated before it loaded
(torch_compiled resets the peak counter after compiling, so its load-time transients are not in it). Then every
engine continues --prompts prompts greedily and its tokens are compared with eager's (this is also the warm-up):
prompts are slices of the built-in corpus's held-out text (random ids for a folder without a tokenizer), and where
an engine's tokens first differ, eager's logit margin between the two tokens says whether that was a near tie
(`greedy_agreement`; on the random-weight 0.5B shape nearly every next token is one). Then --rounds interleaved
rounds: each round runs one request on every engine, the order reversed on alternate rounds, so the machine's swings
shift all engines alike; speed-ups are per-round ratios of TPOT to eager's (`× eager`) and to the first compile
mode's compiled bf16, untuned (`× compiled bf16`, the bar a quantized variant must beat), and each engine's
per-round TPOTs are kept in the JSON (`tpot_rounds_ms`). Figures are medians with p10-p90 over rounds. On cuda, once
every model is timed, each engine runs two more requests under torch.profiler, the first dropped (`kernel_profile`):
kernels per generated token and the share of the rounds' median e2e the card was busy. --float-only models get eager
and compiled bf16 only. compile_s is what compiling took in this process (inductor's caches may already be warm from
an earlier engine of the same graph).

Roofline: bytes a decode step must move (`autoopt.bench.roofline`: weights at the precision the engine holds,
KV at the mean past length of the request's decode steps) x decode steps/s (1000 / median TPOT) / bandwidth.
Bandwidth: --bandwidth-gbps, else --target's `memory_bandwidth_gbps`, else the card's datasheet figure
(`CARD_BANDWIDTH`, recalled, not checked offline), else on the CPU a measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from autoopt.bench.latency import time_request
from autoopt.bench.requests import Request
from autoopt.bench.roofline import (
    artifact_weights_and_kv,
    declared_bandwidth,
    mean_decode_context,
    measure_bandwidth,
    roofline,
)
from autoopt.config.load import check_model, check_target, to_typed
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig, ModelConfig, TargetConfig
from autoopt.engines.base import Engine
from autoopt.engines.registry import engine_class, engine_info
from autoopt.engines.torch_compiled import INFO as COMPILED_INFO
from autoopt.engines.torch_compiled import INT4_GROUPS
from autoopt.result import Bandwidth

REPO = Path(__file__).resolve().parents[1]
EAGER = "eager bf16"
FLOAT_QUANTS = ("none", "bf16", "fp16")
# Card name (torch.cuda.get_device_name) substring -> datasheet memory bandwidth, most specific first.
CARD_BANDWIDTH: tuple[tuple[str, float, str], ...] = (
    ("H200", 4800.0, "NVIDIA H200 datasheet: 4.8 TB/s HBM3e"),
    ("H100 NVL", 3900.0, "NVIDIA H100 NVL datasheet: 3.9 TB/s"),
    ("H100 PCIe", 2000.0, "NVIDIA H100 PCIe datasheet: 2 TB/s HBM2e"),
    ("H100", 3350.0, "NVIDIA H100 SXM5 80GB datasheet: 3.35 TB/s HBM3"),
    ("A100-SXM4-80GB", 2039.0, "NVIDIA A100 80GB SXM datasheet: 2,039 GB/s"),
    ("A100 80GB PCIe", 1935.0, "NVIDIA A100 80GB PCIe datasheet: 1,935 GB/s"),
    ("A100", 1555.0, "NVIDIA A100 40GB datasheet: 1,555 GB/s"),
    ("L4", 300.0, "NVIDIA L4 datasheet: 300 GB/s"),
    ("T4", 320.0, "NVIDIA T4 datasheet: 320 GB/s"),
)
RECALLED = " (as recalled in 2025, not checked from an offline machine)"


def card_bandwidth(device_name: str) -> tuple[float, str] | None:
    """Datasheet bandwidth (GB/s) and its source for a card name, or None for a card not in the table."""
    for key, gb_per_s, source in CARD_BANDWIDTH:
        if key.lower() in device_name.lower():
            return gb_per_s, source + RECALLED
    return None


def _yaml_config(group: str, name: str, schema: type) -> Any:
    from omegaconf import OmegaConf

    path = REPO / "conf" / group / f"{name}.yaml"
    if not path.is_file():
        options = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise SystemExit(f"error: {group}={name} is not a config in conf/{group}; choose one of: {options}")
    cfg = OmegaConf.load(path)
    cfg.pop("defaults", None)
    return to_typed(cfg, schema)


def resolve_bandwidth(args: argparse.Namespace, device_name: str) -> Bandwidth | None:
    if args.bandwidth_gbps:
        return declared_bandwidth(args.bandwidth_gbps, args.bandwidth_source or "given on the command line")
    if args.target:
        target: TargetConfig = _yaml_config("target", args.target, TargetConfig)
        check_target(target)
        if target.memory_bandwidth_gbps > 0:
            return declared_bandwidth(target.memory_bandwidth_gbps, f"target={args.target}: {target.bandwidth_source}")
    if args.device == "cuda":
        card = card_bandwidth(device_name)
        return declared_bandwidth(*card) if card else None
    return measure_bandwidth(threads=args.threads, repeats=3)


def resolve_folder(spec: str, cache_dir: Path) -> tuple[str, Path]:
    """A conf/model name (builtin, qwen2_0_5b_shape, ...) or a path to a local HF model folder."""
    from autoopt.models.source import resolve_model

    if Path(spec).is_dir():
        model = ModelConfig(name=Path(spec).name, kind="hf", path=spec)
    else:
        model = _yaml_config("model", spec, ModelConfig)
    check_model(model)
    resolved = resolve_model(model, cache_dir)
    return model.name, resolved.path


def variants(
    device: str, compile_modes: list[str], tuned: list[str] = (), quants: list[str] | None = None, int4_group: int = 32
) -> list[tuple[str, CandidateConfig]]:
    """(label, candidate) for every engine benched on `device`, eager first; `quants` restricts the non-float
    quants to those (None: every one the engine declares); `tuned` quants (bf16 among them) are benched a second
    time with compile_tuning=coordinate_descent (as gpt-fast compiles), labelled `tuned`; int4 uses groups of
    `int4_group` input channels."""
    out = [(EAGER, CandidateConfig(engine="torch", quant="bf16"))]
    for mode in compile_modes:
        out.append((f"compiled bf16 {mode}", CandidateConfig(engine="torch_compiled", quant="bf16", compile_mode=mode)))
    declared = [q for q in COMPILED_INFO.quants.get(device, ()) if q not in FLOAT_QUANTS]
    for quant in ["bf16", *(q for q in declared if quants is None or q in quants)]:
        candidate = CandidateConfig(engine="torch_compiled", quant=quant, compile_mode=compile_modes[0])
        if quant == "int4":
            candidate.quant_block_size = int4_group
        name = f"{quant} g{int4_group}" if quant == "int4" else quant
        if quant != "bf16":
            out.append((f"compiled {name}", candidate))
        if quant in tuned:
            tuned_candidate = replace(candidate, compile_tuning="coordinate_descent")
            out.append((f"compiled {name} tuned", tuned_candidate))
    return out


def greedy(engine: Engine, ids: np.ndarray, new: int) -> np.ndarray:
    """The engine's greedy tokens (batch, new) for one request."""
    return np.stack(list(engine.generate(ids, new)), 1)


def spread(values: list[float]) -> dict[str, float]:
    p10, p90 = np.percentile(values, [10, 90])
    return {"median": statistics.median(values), "p10": float(p10), "p90": float(p90), "n": len(values)}


def _allocated() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def bench_model(
    name: str, folder: Path, args: argparse.Namespace, bandwidth: Bandwidth | None,
    save: Callable[[dict[str, Any]], None] = lambda model: None,
) -> tuple[dict[str, Any], list[Profiling]]:
    """Every variant of one model, loaded, checked against eager's greedy tokens and timed in interleaved rounds.
    `save` gets the model's figures so far after each stage (marked `partial`), so a run cut short by its time
    limit keeps the loads and timings it finished. On cuda the engines stay loaded and are returned for
    `kernel_profile`, which `main` runs once every model is timed: a profiler session can leave later work
    slower, so none comes before a timing."""
    runtime = RuntimeOptions(device=args.device, threads=args.threads, max_length=args.prompt + args.new,
                             max_batch=1, batch_size=1)
    prompts, prompt_source = bench_prompts(folder, args.prompts, args.prompt)
    mean_context = mean_decode_context([(args.prompt, args.new)])
    rows: dict[str, dict[str, Any]] = {}
    engines: dict[str, Engine] = {}

    def checkpoint() -> None:
        save({"model": name, "path": str(folder), "partial": True, "engines": list(rows.values())})

    float_only = name in args.float_only
    for label, candidate in variants(args.device, args.compile_modes, [] if float_only else args.tuned,
                                     [] if float_only else args.quants, args.int4_group):
        compiled = candidate.engine == "torch_compiled"
        row: dict[str, Any] = {"label": label, "engine": candidate.engine, "quant": candidate.quant,
                               "compile_mode": candidate.compile_mode if compiled else None,
                               "quant_block_size": candidate.quant_block_size if candidate.quant == "int4" else None,
                               "compile_tuning": candidate.compile_tuning if compiled else None,
                               "decode_context": engine_info(candidate.engine).decode_context(
                                   candidate, mean_context, runtime.max_length)}
        rows[label] = row
        before = _allocated()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            engine = engine_class(candidate.engine).load(folder, candidate, runtime)
            row["load_s"] = time.perf_counter() - start
            row["compile_s"] = engine.compile_seconds()
            row["cudagraph_skips"] = getattr(engine, "cudagraph_skips", None)
            greedy(engine, prompts[0], args.new)
        except Exception as e:  # one variant's failure is a result, not the end of the run
            row["error"] = _one_line(e)
            print(f"{name} · {label}: failed to load: {row['error']}", flush=True)
            continue
        row["peak_memory_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20 if args.device == "cuda" else None
        engines[label] = engine
        compiling = "" if row["compile_s"] is None else f" (compiling {row['compile_s']:.1f}s)"
        print(f"{name} · {label}: loaded in {row['load_s']:.1f}s{compiling}", flush=True)
        checkpoint()
    if EAGER not in engines:
        for engine in engines.values():
            engine.close()
        return {"model": name, "path": str(folder), "engines": list(rows.values()), "error": "eager failed to load"}, []
    try:  # a failure here ends this model's bench: its engines are closed, and main goes on with the next model
        reference = [greedy(engines[EAGER], p, args.new) for p in prompts]
        for label, engine in list(engines.items()):
            try:
                outputs = [greedy(engine, p, args.new) for p in prompts]
            except Exception as e:
                rows[label]["error"] = _one_line(e)
                engines.pop(label).close()
                continue
            rows[label]["greedy"] = greedy_agreement(engines[EAGER], prompts, reference, outputs)
        checkpoint()
        samples: dict[str, dict[str, list[float]]] = {label: {"ttft": [], "tpot": [], "e2e": []} for label in engines}
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for label in order:
                # tokens arrive as host arrays, so each timestamp includes the device work
                timing = time_request(engines[label], Request(prompts[r % len(prompts)], args.new))
                samples[label]["ttft"].append(1e3 * timing.ttft_s)
                samples[label]["tpot"].append(1e3 * timing.tpot_s)
                samples[label]["e2e"].append(1e3 * timing.e2e_s)
        eager_tpot = samples[EAGER]["tpot"]
        base = samples.get(f"compiled bf16 {args.compile_modes[0]}", {}).get("tpot")
        for label in engines:
            row, tpot = rows[label], samples[label]["tpot"]
            row["tpot_rounds_ms"] = tpot  # in round order, so that any two engines' per-round ratio can be taken later
            row["ttft_ms"] = spread(samples[label]["ttft"])
            row["tpot_ms"] = spread(tpot)
            row["e2e_ms"] = spread(samples[label]["e2e"])
            row["decode_tokens_per_s"] = spread([1e3 / t for t in tpot])
            row["speedup_vs_eager"] = spread([e / t for e, t in zip(eager_tpot, tpot, strict=True)])
            # the question for a quantized variant is whether it beats compiled bf16, in the same rounds
            row["speedup_vs_compiled_bf16"] = (None if base is None or label == EAGER
                                               else spread([b / t for b, t in zip(base, tpot, strict=True)]))
            row["roofline"] = _roofline(row, folder, args, bandwidth)
        checkpoint()
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    profiling = [Profiling(rows[label], engine, prompts[0]) for label, engine in engines.items()]
    if args.device != "cuda":  # the kernel profile is for cards
        for job in profiling:
            job.row["kernels"] = None
            job.engine.close()
        profiling = []
    return {"model": name, "path": str(folder), "safetensors_mb": _folder_mb(folder), "prompts": prompt_source,
            "engines": list(rows.values())}, profiling


class Profiling(NamedTuple):
    """A timed engine awaiting its kernel profile: its row of figures, and the prompt its rounds began with."""

    row: dict[str, Any]
    engine: Engine
    prompt: np.ndarray


def bench_prompts(folder: Path, count: int, length: int) -> tuple[list[np.ndarray], str]:
    """`count` prompts (1, length): slices of the built-in corpus's held-out text in the folder's tokenizer, as
    the accuracy check cuts them; random token ids where the folder has no tokenizer or the text is too short.
    On real text a trained model's next token is rarely a near tie, so a greedy divergence means more."""
    from transformers import AutoTokenizer

    from autoopt.accuracy.decode import decode_prompts
    from autoopt.models.corpus import load_corpus

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        stream = np.asarray(tokenizer("<|endoftext|>".join(load_corpus().heldout))["input_ids"], dtype=np.int64)
        return [p[None] for p in decode_prompts(stream, count, length)], "held-out text of the built-in corpus"
    except (OSError, ValueError) as e:
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        rng = np.random.default_rng(0)
        ids = [rng.integers(1, vocab, size=(1, length), dtype=np.int64) for _ in range(count)]
        return ids, f"random token ids ({_one_line(e)})"


def greedy_agreement(eager: Engine, prompts: list[np.ndarray], reference: list[np.ndarray],
                     outputs: list[np.ndarray]) -> dict[str, Any]:
    """How an engine's greedy tokens compare with eager's: prompts identical, the share of positions that agree,
    the share of each continuation before its first divergence, and at each divergence eager's own logit margin
    between its token and the engine's (teacher-forced on eager's continuation): a margin near zero is a near tie
    that any change of kernel may flip, a large one a real difference."""
    first, margins = [], []
    for prompt, ref, out in zip(prompts, reference, outputs, strict=True):
        differ = np.flatnonzero(ref[0] != out[0])
        if differ.size == 0:
            first.append(ref.shape[1])
            continue
        at = int(differ[0])
        first.append(at)
        logits = eager.logits(np.concatenate([prompt, ref[:, :at]], axis=1))[0, -1]
        margins.append(float(logits[ref[0, at]] - logits[out[0, at]]))
    new = reference[0].shape[1]
    return {
        "prompts": len(prompts),
        "identical_prompts": sum(f == new for f in first),
        "token_agreement": float(np.mean([(o == r).mean() for o, r in zip(outputs, reference, strict=True)])),
        "prefix_agreement": float(np.mean(first) / new),
        "first_divergence": first,
        "divergence_margins": margins,
    }


def kernel_profile(engine: Engine, prompt: np.ndarray, new: int, wall_ms: float, device: str = "cuda") -> dict[str, Any]:
    """Two more requests under torch.profiler, the first a warm-up step whose events are dropped (a profiler
    session can miss the kernels of its first moments): the kernels the second
    ran per generated token, and how long the card was busy with them against `wall_ms`, the request's median
    end-to-end time in the unprofiled rounds (the profiler's own overhead would inflate a wall measured under
    it, and an eager loop's far more than a graph replay's). A card busy a small share of the wall waits on
    launches or the host; busy most of it, on its kernels, and then the top kernels say which. `device="cpu"`
    counts CPU operators instead, which is how the method is tested without a card. A profile that saw no
    device event is "unavailable", not a count of zero."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, schedule

    # CPU activity too: some CUDA-only sessions have been reported to record no kernels
    activities, kind = ([ProfilerActivity.CPU, ProfilerActivity.CUDA], DeviceType.CUDA) if device == "cuda" else (
        [ProfilerActivity.CPU], DeviceType.CPU)
    try:
        with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=1, repeat=1)) as prof:
            for _ in range(2):
                time_request(engine, Request(prompt, new))
                prof.step()
        # user annotations (the schedule's ProfilerStep#N among them) mark regions, they are not work
        kernels = [e for e in prof.key_averages() if e.device_type == kind and not e.is_user_annotation]
    except Exception as e:  # the profiler's own failure (CUPTI, CUDA graphs) is recorded, not fatal
        return {"unavailable": _one_line(e)}
    if not kernels:
        return {"unavailable": f"the profiler recorded no {device} event"}
    busy_ms = sum(e.self_device_time_total for e in kernels) / 1e3
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:6]
    return {
        "method": f"torch.profiler ({device} events), one request of the timed shape after one dropped "
        "warm-up request, profiled after every model's rounds; wall = the rounds' median e2e",
        **per_token(kernels, new),
        "device_busy_ms": busy_ms,
        "wall_ms": wall_ms,
        "busy_share": busy_ms / wall_ms if wall_ms else None,
        "top": [{"kernel": e.key[:100], "ms": e.self_device_time_total / 1e3, "count": e.count} for e in top],
    }


COPIES = ("Memcpy", "Memset")  # the profiler's names for the card's copy and fill events, which launch no kernel


def per_token(events: list[Any], new: int) -> dict[str, float]:
    """Kernel launches and copies (host to device and back, fills) per generated token, counted apart."""
    copies = sum(e.count for e in events if e.key.startswith(COPIES))
    return {"kernels_per_token": (sum(e.count for e in events) - copies) / new, "copies_per_token": copies / new}


def _roofline(row: dict[str, Any], folder: Path, args: argparse.Namespace,
              bandwidth: Bandwidth | None) -> dict[str, Any] | None:
    if bandwidth is None:
        return {"unavailable": "no bandwidth for this device: pass --bandwidth-gbps or --target"}
    try:
        weights, kv = artifact_weights_and_kv(row["engine"], folder, row["quant"], rows_read=1,
                                              group_size=row["quant_block_size"], device=args.device)
    except ValueError as e:
        return {"unavailable": str(e)}
    return asdict(roofline(weights, kv, row["decode_context"], row["tpot_ms"]["median"], bandwidth))


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def table(models: list[dict[str, Any]]) -> str:
    lines = [
        "| model | engine | decode tok/s (p10-p90) | × eager | × compiled bf16 | TTFT ms | TPOT ms | peak MB "
        "| compile s | roofline | kernels/token, card busy "
        "| greedy = eager (prompts; prefix before divergence; eager's margin there) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        if "engines" not in m:
            lines.append(f"| {m['model']} | - | failed: {m.get('error', 'not benched')} |||||||||| ")
        for e in m.get("engines", []):
            if "error" in e or "tpot_ms" not in e:
                lines.append(f"| {m['model']} | {e['label']} | failed: {e.get('error', 'not timed')} |||||||||| ")
                continue
            d, s, c = e["decode_tokens_per_s"], e["speedup_vs_eager"], e.get("speedup_vs_compiled_bf16")
            vs_compiled = f"{c['median']:.2f} ({c['p10']:.2f}-{c['p90']:.2f})" if c else "-"
            roof = e["roofline"] or {}
            eff = f"{roof['efficiency']:.1%}" if "efficiency" in roof else "-"
            k = e.get("kernels") or {}
            kern = f"{k['kernels_per_token']:.0f}, {k['busy_share']:.0%}" if k.get("busy_share") is not None else "-"
            mem = f"{e['peak_memory_mb']:.0f}" if e.get("peak_memory_mb") is not None else "-"
            compiled = f"{e['compile_s']:.1f}" if e.get("compile_s") is not None else "-"  # None: nothing compiled
            g = e["greedy"]
            margins = g.get("divergence_margins") or []
            tie = f", margin ≤ {max(margins):.2f}" if margins else ""
            lines.append(
                f"| {m['model']} | {e['label']} | {d['median']:.1f} ({d['p10']:.1f}-{d['p90']:.1f}) | "
                f"{s['median']:.2f} ({s['p10']:.2f}-{s['p90']:.2f}) | {vs_compiled} | {e['ttft_ms']['median']:.2f} | "
                f"{e['tpot_ms']['median']:.3f} | {mem} | {compiled} | {eff} | {kern} | "
                f"{g['identical_prompts']}/{g['prompts']} (prefix {g.get('prefix_agreement', 0):.0%}{tie}) |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", default="builtin,qwen2_0_5b_shape",
                        help="comma-separated conf/model names or local HF folders, benched in this order")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=4, help="prompts for greedy agreement; rounds cycle them")
    parser.add_argument("--prompt", type=int, default=128, help="prompt length (tokens)")
    parser.add_argument("--new", type=int, default=32, help="new tokens per request")
    parser.add_argument("--compile-modes", default=None,
                        help="comma-separated; default reduce-overhead,default on cuda and default on cpu")
    parser.add_argument("--tuned", default=None,
                        help="comma-separated quants also benched with compile_tuning=coordinate_descent (cuda only); "
                        "default int8_weight,bf16 on cuda (int8 is slow there untuned), none on cpu")
    parser.add_argument("--float-only", default="",
                        help="comma-separated models (a conf/model name, or a folder's name) benched as eager bf16 and compiled bf16 only (no "
                        "quantized or tuned variants: each is one more compile)")
    parser.add_argument("--quants", default=None,
                        help="comma-separated quants benched compiled besides bf16; default every one the engine "
                        "declares for the device beyond the float casts")
    parser.add_argument("--int4-group", type=int, default=32, choices=INT4_GROUPS,
                        help="int4's group size (input channels per scale and zero)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default=None, help="conf/target name whose memory_bandwidth_gbps to use")
    parser.add_argument("--bandwidth-gbps", type=float, default=0.0)
    parser.add_argument("--bandwidth-source", default="")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "autoopt")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON (rewritten after each stage of each model)")
    args = parser.parse_args(argv)
    modes = args.compile_modes or ("reduce-overhead,default" if args.device == "cuda" else "default")
    args.compile_modes = [m for m in modes.split(",") if m]
    tuned = args.tuned if args.tuned is not None else ("int8_weight,bf16" if args.device == "cuda" else "")
    args.tuned = [q for q in tuned.split(",") if q]
    args.quants = None if args.quants is None else [q for q in args.quants.split(",") if q]
    args.float_only = [m for m in args.float_only.split(",") if m]
    if args.rounds < 1 or args.prompts < 1 or args.new < 2:
        parser.error("--rounds and --prompts must be >= 1 and --new >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda needs a CUDA build of torch and a CUDA device; smoke with --device cpu")
    # Every compiled engine compiles the same StaticDecoder.forward: dynamo's per-code-object limit (8) would
    # silently run the later engines eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    bandwidth = resolve_bandwidth(args, device_name)
    report: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "batch": 1,
        "prompt_len": args.prompt,
        "new_tokens": args.new,
        "rounds": args.rounds,
        "compile_modes": args.compile_modes,
        "bandwidth": None if bandwidth is None else {"gb_per_s": bandwidth.gb_per_s, "method": bandwidth.method},
        "models": [],
    }
    profiling: list[Profiling] = []
    for spec in [s for s in args.models.split(",") if s]:
        done = list(report["models"])
        latest: dict[str, Any] = {"model": spec}  # the model's figures as last saved, kept if it fails later

        def save(model: dict[str, Any], done: list[dict[str, Any]] = done, latest: dict[str, Any] = latest) -> None:
            latest.clear()
            latest.update(model)
            args.out.write_text(json.dumps({**report, "models": [*done, model]}, indent=2) + "\n")

        try:
            name, folder = resolve_folder(spec, args.cache_dir)
            model, waiting = bench_model(name, folder, args, bandwidth, save)
        except Exception as e:  # one model's failure costs neither the others nor the profiles of those timed
            print(f"{spec}: failed: {_one_line(e)}", flush=True)
            model, waiting = {**latest, "error": _one_line(e)}, []
        report["models"].append(model)
        profiling += waiting
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    for job in profiling:
        job.row["kernels"] = kernel_profile(job.engine, job.prompt, args.new, job.row["e2e_ms"]["median"])
        job.engine.close()
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{device_name}, batch 1, prompt {args.prompt}, {args.new} new tokens, {args.rounds} interleaved rounds; "
          f"bandwidth {report['bandwidth']}\n")
    print(table(report["models"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
