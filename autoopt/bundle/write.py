"""Write a measured candidate as a self-contained deployment bundle (layout: `autoopt.bundle.layout`)."""

from __future__ import annotations

import datetime
import re
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import autoopt
from autoopt.bundle.layout import MANIFEST, MODEL_DIR, README, REFERENCE
from autoopt.bundle.manifest import recorded_decoding, write_manifest
from autoopt.bundle.verify import minimum_tolerances
from autoopt.config.errors import ConfigError
from autoopt.config.runtime import RUNTIME_ENV
from autoopt.config.serde import to_dict
from autoopt.digest import package_digest
from autoopt.engines.registry import engine_class, engine_info
from autoopt.result import DEFINITIONS, MeasureResult, deadlines_in_words

FIGURE_GROUPS = ("speed", "memory", "accuracy", "cost", "build", "roofline", "serving")  # the last two may be absent
_PERCENTILES = {
    "p50": "median of",
    "p90": "90th percentile of",
    "p99": "99th percentile of",
    "mean": "mean of",
    "cv": "coefficient of variation (stdev / mean) of",
    "n": "number of timed request batches behind",
}
# Figures of MeasureResult that autoopt.result.DEFINITIONS does not define.
_DEFINITIONS = {
    "speed.runs": "timed request batches, after burn-in",
    "speed.seconds": "wall time of the timed request batches",
    "accuracy.tokens": "teacher-forced positions compared with the reference",
    "cost.price_per_hour": "on-demand price of one instance of the target",
    "build.seconds": "wall time spent building the artifact in the measuring run (0 when cached)",
    "build.build_seconds": "wall time the artifact's build steps took when first built",
    "build.cached": "1 where every build step of the measuring run came from the cache, 0 otherwise",
    "roofline.weight_bytes": "bytes of weights one decode step reads, at stored precision",
    "roofline.kv_bytes": "bytes of KV cache one decode step reads at roofline.mean_context",
    "roofline.mean_context": "the context a decode step reads: the workload's mean decode context, or the whole "
    "preallocated length for static caches whose attention reads all of it (torch kv_cache=static, torch_compiled)",
    "roofline.steps_per_s": "decode steps per second measured (1000 / TPOT p50)",
    "roofline.bandwidth_gb_per_s": "the memory bandwidth efficiency is taken against: measured on CPU targets, the "
    "target's declared one elsewhere",
    "roofline.bound_steps_per_s": "decode steps per second the bandwidth allows: bandwidth / bytes_per_step",
    "roofline.fits_llc": "1 where bytes_per_step fits the last-level cache (then efficiency can exceed 1), 0 where "
    "it does not (efficiency above 1 then says part of each step's bytes came from the caches, or the bandwidth "
    "measured low), None where the cache size is unknown",
    "serving.converged": "1 where the capacity search bracketed the capacity within 5 %, 0 where its probes ran out",
    "serving.probes": "open-loop runs the capacity search made",
    "serving.max_batch": "rows the dynamic batcher may put in one batch",
    "serving.occupancy": "mean rows per batch (with continuous batching: per decode step) / max_batch, in the "
    "capacity run",
    "serving.peak_rate_rps": "the workload's peak request rate, which replicas and cost are sized for",
    "serving.warmup_s": "each capacity probe's first seconds of traffic, served but not judged (None: not recorded)",
    "serving.judged_s": "each capacity probe's seconds of judged traffic after its warm-up (None: not recorded), "
    "or longer where serving.min_judged needed more",
    "serving.min_judged": "each capacity probe judged at least this many requests, over more than serving.judged_s "
    "seconds where that offered fewer (0: no minimum; None: not recorded)",
    "serving.mixed_lengths": "1 where the scheduler could fill rows a batch's lead prompt length left free with "
    "shorter prompts, padded to the lead's length (serving_mix_lengths on an engine that masks padding), 0 where "
    "each batch held one length (None: not recorded, measured with one length per batch)",
    "serving.continuous": "1 where requests joined the running batch between decode steps and left it at their "
    "last token (serving_batching=continuous), 0 where a batch ran until its longest row was done (None: not "
    "recorded, measured that way)",
}
_UNITS = {
    "speed.runs": "request batches",
    "speed.output_tokens_per_s": "tokens/s",
    "accuracy.kl_mean": "nats",
    "accuracy.top1_agreement": "fraction",
    "accuracy.sampled_agreement": "fraction",
    "accuracy.perplexity": "dimensionless",
    "accuracy.reference_perplexity": "dimensionless",
    "accuracy.tokens": "positions",
    "accuracy.decode_prefix_agreement": "fraction",
    "accuracy.decode_token_agreement": "fraction",
    "accuracy.decode_self_agreement": "fraction",
    "accuracy.decode_tokens": "tokens",
    "speed.cycles": "passes",
    "speed.compile_cache_warm": "flag",
    "speed.other_cpu_share": "fraction",
    "serving.other_cpu_share": "fraction",
    "build.cached": "flag",
    "roofline.fits_llc": "flag",
    "serving.converged": "flag",
    "serving.mixed_lengths": "flag",
    "serving.continuous": "flag",
    "cost.usd_per_1m_output_tokens": "USD per 1M output tokens",
    "cost.price_per_hour": "USD/hour",
    "roofline.weight_bytes": "bytes",
    "roofline.kv_bytes": "bytes",
    "roofline.bytes_per_step": "bytes",
    "roofline.mean_context": "tokens",
    "roofline.steps_per_s": "steps/s",
    "roofline.bound_steps_per_s": "steps/s",
    "roofline.bandwidth_gb_per_s": "GB/s",
    "roofline.efficiency": "ratio",
    "serving.usd_per_day": "USD/day",
    "serving.usd_per_1m_output_tokens_at_peak": "USD per 1M output tokens",
    "serving.replicas": "replicas",
    "serving.occupancy": "fraction",
    "serving.max_batch": "rows",
    "serving.probes": "runs",
    "serving.warmup_s": "s",
    "serving.judged_s": "s",
    "serving.min_judged": "requests",
}


def flatten_figures(result: MeasureResult) -> dict[str, float | int | None]:
    """Every number of the result, keyed by its dotted path (`speed.e2e_ms.p90`); None where absent."""
    figures: dict[str, float | int | None] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, bool):  # a flag (compile_cache_warm): 1/0, as DEFINITIONS reads it
            figures[prefix] = int(value)
        elif value is None or isinstance(value, (int, float)):
            figures[prefix] = value

    d = result.to_dict()
    for group in FIGURE_GROUPS:
        if d[group] is not None:
            walk(group, d[group])
    for shape in d["speed"]["shapes"]:  # a list: keyed by its shape, as `speed.shapes.p128_o32_b1.e2e_ms.p90`
        key = shape_key(shape["prompt_len"], shape["output_len"], shape["batch"])
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            walk(f"speed.shapes.{key}.{name}", shape[name])
    return figures


def shape_key(prompt_len: int, output_len: int, batch: int) -> str:
    """A request shape as a figure's path segment: `p128_o32_b1`."""
    return f"p{prompt_len}_o{output_len}_b{batch}"


_SHAPE_KEY = re.compile(r"p(\d+)_o(\d+)_b(\d+)")


def definition(figure: str) -> str:
    if figure in DEFINITIONS:
        return DEFINITIONS[figure]
    if figure in _DEFINITIONS:
        return _DEFINITIONS[figure]
    parent, _, stat = figure.rpartition(".")
    if figure.startswith("speed.shapes.") and (shape := _SHAPE_KEY.fullmatch(figure.split(".")[2])):
        prompt_len, output_len, batch = shape.groups()
        latency = parent.rpartition(".")[2]
        return (f"{_PERCENTILES.get(stat, stat)} speed.{latency} over the timed repeats of one request shape: "
                f"{prompt_len} prompt tokens, {output_len} new tokens, batch {batch} ({DEFINITIONS['speed.shapes']})")
    if figure.startswith("serving.classes."):
        name = parent.rpartition(".")[2]
        return f"{stat} of class {name}: {DEFINITIONS['serving.classes']}"
    if parent in DEFINITIONS and stat in _PERCENTILES:
        return f"{_PERCENTILES[stat]} {parent} ({DEFINITIONS[parent]})"
    return f"{figure.replace('.', ' ').replace('_', ' ')} (as recorded by autoopt.result.MeasureResult)"


def unit(figure: str) -> str:
    if figure in _UNITS:
        return _UNITS[figure]
    stat = figure.rpartition(".")[2]
    if stat == "cv" or stat.endswith("_cv_within_shape_median"):
        return "ratio"
    if stat == "n":
        return "request batches"
    parts = figure.split(".")
    name = parts[-2] if parts[-1] in _PERCENTILES else parts[-1]
    if name == "attainment":
        return "fraction"
    if name in ("offered", "completed", "rejected"):
        return "requests"
    for suffix, symbol in (("_ms", "ms"), ("_rps", "requests/s"), ("_s", "s"), ("seconds", "s"), ("_mb", "MiB")):
        if name.endswith(suffix):
            return symbol
    return ""


def metrics(result: MeasureResult) -> dict[str, dict[str, Any]]:
    return {
        figure: {"value": value, "definition": definition(figure), "unit": unit(figure)}
        for figure, value in flatten_figures(result).items()
    }


def manifest_payload(
    result: MeasureResult,
    workload: dict[str, Any],
    resolved_config: dict[str, Any],
    measured_in: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest's body. `runtime` is copied from the measurement, never re-derived."""
    runtime = result.runtime
    return {
        "autoopt_version": autoopt.__version__,
        "autoopt_code": package_digest("autoopt"),  # the sources that wrote this bundle (`autoopt.digest`)
        # Where a sweep exported it: the study and trial whose measurement this is, and whether that trial's
        # artifact, rebuilt after the search with other files, was measured again (the figures here are then those).
        "measured_in": measured_in,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "candidate": to_dict(result.candidate),
        "engine": result.candidate.engine,
        "model": result.model,
        "build": {"steps": result.build.steps, "key": result.build.key},
        "target": {
            "name": result.target,
            "device": runtime.device,
            "price_per_hour": result.cost.price_per_hour,
            "price_source": result.cost.price_source,
        },
        "runtime": to_dict(runtime),
        # as the measuring process had it (autoopt.jobs.launch, MeasureJob.env): serve and verify re-exec with it
        "runtime_env": {**RUNTIME_ENV, "OMP_NUM_THREADS": str(runtime.threads)},
        "workload": {
            "name": workload.get("name"),
            "prompt_lengths": list(workload["prompt_lengths"]),
            "output_lengths": list(workload["output_lengths"]),
            "batch_size": runtime.batch_size,
            "decoding": asdict(recorded_decoding(workload)),
        },
        "reference_sha256": result.reference_sha256,
        "metrics": metrics(result),
        "tolerances": minimum_tolerances(),
        "env": result.env,
        "resolved_config": resolved_config,
    }


def install_markdown(install: str) -> str:
    """An install instruction in Markdown: a pip command (`autoopt_install`'s "pip install -e ... in autoopt's source
    folder") in a code span, the words after it outside; a hint, prose, as it is."""
    command, sep, where = install.partition(" in ")
    return f"`{command}`{sep}{where}" if command.startswith("pip ") else install


def side_by_side(measured_in: dict[str, Any]) -> list[str]:
    """The sweep's side-by-side confirmation against fp32, where one ran: the speed-up to quote."""
    c = measured_in.get("confirmed")
    if not c:
        return []
    (latency,) = (k for k in c if k.startswith("lower_"))
    speed, gain = c["output_tokens_per_s"], c[latency]
    rounds = len(speed["rounds"])
    ref_batch, batch = c["batches"]
    batches = "" if ref_batch == batch else f", batch {batch} against the reference's {ref_batch}"
    busy = (" (enough that the ratio may say as much about that work: rerun on a quiet machine)" if c["contended"]
            else "")
    return [f"- against the fp32 reference ({c['against']}), timed side by side: {speed['median']:.2f}x the output "
            f"tokens/s (range {speed['low']:.2f}-{speed['high']:.2f}) and {gain['median']:.2f}x lower "
            f"{latency.removeprefix('lower_').replace('_', ' ')} (range {gain['low']:.2f}-{gain['high']:.2f}), over "
            f"{rounds} interleaved rounds, each run in a fresh process{batches}; other processes took up to "
            f"{c['other_cpu_share_max']:.0%} of the CPUs{busy}. This is the speed-up to quote; the figures above "
            "are this candidate's alone"]


def readme(manifest: dict[str, Any], graphs: str | None = None) -> str:
    """The bundle's README.md; `graphs`: the model folder's subfolder of compiled graphs, if it ships one."""
    m = {k: v["value"] for k, v in manifest["metrics"].items()}
    target, runtime, workload, model = (manifest[k] for k in ("target", "runtime", "workload", "model"))
    requirements = engine_info(manifest["engine"]).requires[target["device"]]
    module = ", ".join(r.module for r in requirements)
    install = "; ".join(dict.fromkeys(install_markdown(r.install) for r in requirements))
    knobs = ", ".join(f"{k}={v}" for k, v in manifest["candidate"].items())
    env = " ".join(f"{k}={v}" for k, v in manifest["runtime_env"].items())
    snippet = engine_class(manifest["engine"]).plain_runtime_snippet()
    # torch_compiled's snippet runs autoopt's own decode loop: the runtime alone does not reproduce it.
    with_autoopt = re.search(r"^(from|import) autoopt\b", snippet, re.MULTILINE) is not None
    plain = (
        (f"## Run it with {module} and autoopt's engine code", "autoopt's engine reads them there")
        if with_autoopt
        else (f"## Run it with {module} alone", "the runtime's own configuration files")
    )
    setting = (
        f"On target `{target['name']}` ({target['device']}, threads: {runtime['threads']}), batch "
        f"{runtime['batch_size']}, prompts of {workload['prompt_lengths']} tokens, "
        f"{workload['output_lengths']} new tokens, {_decoding(workload)}; warm (after warm-up and burn-in), "
        f"{m['speed.e2e_ms.n']} timed request batches:"
    )
    e2e = f"p50 {m['speed.e2e_ms.p50']:.1f} ms, p90 {m['speed.e2e_ms.p90']:.1f} ms"
    ttft, tpot = m["speed.ttft_ms.p50"], m["speed.tpot_ms.p50"]
    cost = (
        f"${m['cost.usd_per_1m_output_tokens']:.4f} per 1M output tokens at ${target['price_per_hour']}/hour"
    )
    sampled = m.get("accuracy.sampled_agreement")
    fidelity = (
        f"top-1 agreement {m['accuracy.top1_agreement']:.4f}, "
        + ("" if sampled is None else f"sampled agreement {sampled:.4f} (under the decoding above), ")
        + "mean KL(reference || this) "
        f"{m['accuracy.kl_mean']:.3e} nats, perplexity {m['accuracy.perplexity']:.2f} "
        f"(reference {m['accuracy.reference_perplexity']:.2f})"
    )
    lines = [
        f"# autoopt deployment bundle: {manifest['engine']} on {target['name']}",
        "",
        f"Candidate: {knobs}",
        f"Model: {model.get('name')} ({model.get('key')}); exported {manifest['created_utc']} "
        f"by autoopt {manifest['autoopt_version']}.",
        "",
        "## What it measured",
        setting,
        "",
        f"- end-to-end latency per request batch: {e2e}",
        f"- time to first token: p50 {ttft:.1f} ms; time per later token: p50 {tpot:.2f} ms",
        f"- throughput: {m['speed.output_tokens_per_s']:.1f} output tokens/s (all rows of the batch)",
        *side_by_side(manifest.get("measured_in") or {}),
        cold_start(m, graphs, manifest["candidate"]["warmup"], workload, runtime["batch_size"]),
        f"- cost: {cost}",
        f"- against the fp32 reference, teacher-forced on {m['accuracy.tokens']} held-out positions:",
        f"  {fidelity}",
        *under_load(m, manifest["candidate"]),
        *per_shape(m),
        "",
        "Every figure, its definition and its unit are in `manifest.json` under `metrics`.",
        "",
        "## Run it",
        f"Needs autoopt's core and the runtime `{module}`: {install}.",
        "",
        '    python -m autoopt.serve . --prompt "def " --max-new-tokens 32',
        "",
        "or from Python:",
        "",
        "    from autoopt.bundle import load_bundle",
        "",
        '    with load_bundle("path/to/this/bundle") as bundle:',
        "        bundle.warm_up()  # before taking traffic: the cold-start figure above is the first request after it",
        '        print(bundle.generate_text("def ", max_new_tokens=32))',
        "",
        plain[0],
        f"Every setting it was measured with is in `model/` ({plain[1]}). From the bundle's folder, start",
        "Python with the allocator settings the measurement had:",
        f"`{env} python run.py`, where `run.py` is:",
        "",
        *(f"    {line}" if line else "" for line in snippet.splitlines()),
        "",
        f"`model/` is configured for at most {runtime['max_length']} tokens of prompt plus completion (the longest "
        "measured request): autoopt's loader refuses a longer request, the runtime's own API may cut it short "
        "(`load_bundle(..., max_length=N)` raises the limit).",
        *engine_class(manifest["engine"]).plain_runtime_caveats(),
        "",
        "Before it takes traffic, run one short generation per prompt length (and batch size) it will serve, as",
        "`bundle.warm_up()` and `python -m autoopt.serve` do: the first request otherwise pays the runtime's",
        "one-time costs, which no figure above includes but the cold start's.",
        "",
        "## Verify it",
        "    python -m autoopt.bundle verify .",
        "",
        "checks the SHA-256 of every file against `manifest.json` and that `model/`'s runtime files hold the",
        "manifest's settings, then re-measures accuracy on",
        f"`{REFERENCE}` and speed on the workload above and compares both with the manifest's figures",
        "within tolerances no looser than autoopt's built-in minimums (speed only within a factor: shared",
        "machines swing 3-4x minute to minute). It prints the manifest's own SHA-256: pin it elsewhere and pass",
        "`--manifest-sha256` to be sure the manifest itself is the one exported.",
    ]
    return "\n".join(lines) + "\n"


def per_shape(m: dict[str, Any]) -> list[str]:
    """The README's table of latency per request shape (none where the manifest has no per-shape figures)."""
    keys = {k.split(".")[2] for k in m if k.startswith("speed.shapes.")}
    shapes = sorted((tuple(map(int, match.groups())), key) for key in keys if (match := _SHAPE_KEY.fullmatch(key)))
    if not shapes:
        return []
    lines = ["", "Per request shape (warm; ms; n = timed repeats of that shape, cv = their spread of e2e):", "",
             "| prompt tokens | new tokens | batch | TTFT p50 | TPOT p50 | e2e p50 | e2e p90 | e2e cv | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (prompt_len, output_len, batch), key in shapes:
        f = {k.split(".", 3)[3]: v for k, v in m.items() if k.startswith(f"speed.shapes.{key}.")}
        lines.append(f"| {prompt_len} | {output_len} | {batch} | {f['ttft_ms.p50']:.1f} | {f['tpot_ms.p50']:.2f} | "
                     f"{f['e2e_ms.p50']:.1f} | {f['e2e_ms.p90']:.1f} | {f['e2e_ms.cv']:.3f} | {f['e2e_ms.n']} |")
    return lines


def _batching(m: dict[str, Any], candidate: dict[str, Any]) -> str:
    if m.get("serving.continuous"):
        chunk = candidate.get("serving_prefill_chunk", 0)
        parts = f", their prompts prefilled at most {chunk} tokens before each decode step" if chunk else ""
        return ("requests of any length join the running batch between decode steps and leave it at their last "
                f"token{parts}")
    if m.get("serving.mixed_lengths"):
        return "a batch takes its lead's prompt length, then may fill free rows with shorter prompts, padded"
    return "a batch holds prompts of one length: more varied lengths fill fewer rows"


def under_load(m: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """The README's serving lines, for a candidate measured under open-loop load (none otherwise)."""
    if m.get("serving.capacity_rps") is None:
        return []
    probe = "" if m.get("serving.warmup_s") is None else (
        f"; each probe {m['serving.warmup_s']:g} s of warm-up traffic, then {m['serving.judged_s']:g} s judged"
        + (f" (longer where that offered fewer than {m['serving.min_judged']} requests)" if m.get("serving.min_judged")
           else ""))
    batches = "a continuous batch" if m.get("serving.continuous") else "dynamic batches"
    # a queue delay holds a partial group batch: nothing under continuous batching, or with one row a batch
    waits = not m.get("serving.continuous") and m["serving.max_batch"] > 1
    delay = f"queue delay {candidate['serving_queue_delay_ms']} ms, " if waits else ""
    load = (f"- under open-loop load ({batches} of up to {m['serving.max_batch']} rows, {delay}"
            f"{candidate['serving_policy']} priority{probe})")
    if not m["serving.capacity_rps"]:
        return [f"{load}: no offered rate held every class's SLO"]
    bound = "" if m["serving.converged"] else " (a lower bound: the probes ran out before bracketing it within 5 %)"
    lines = [
        f"{load}: capacity {m['serving.capacity_rps']:.2f} requests/s{bound}, the highest offered rate at which "
        f"every class kept its SLO, with prompts of the workload's lengths ({_batching(m, candidate)}); at that rate:",
    ]
    names = sorted({k.split(".")[2] for k in m if k.startswith("serving.classes.")})  # names hold no '.'
    for name in names:
        c = {k.rsplit(".", 1)[1]: v for k, v in m.items() if k.startswith(f"serving.classes.{name}.")}
        slo = deadlines_in_words(c["slo_ms"], c.get("ttft_slo_ms", 0.0), c.get("itl_slo_ms", 0.0))
        if c.get("offered") == 0:
            lines.append(f"  - {name} ({slo}): not offered at that rate")
            continue
        p99 = "none completed" if c["e2e_p99_ms"] is None else f"e2e p99 {c['e2e_p99_ms']:.0f} ms"
        first = "" if not c.get("ttft_slo_ms") or c["ttft_p99_ms"] is None else f", TTFT p99 {c['ttft_p99_ms']:.0f} ms"
        samples = "" if c.get("completed") is None else f" over {c['completed']} of {c['offered']} requests"
        stall = "" if c.get("itl_max_p99_ms") is None else (
            f", longest wait between two tokens p99 {c['itl_max_p99_ms']:.0f} ms")
        lines.append(f"  - {name} ({slo}): {p99}{first}{samples}, attainment {c['attainment']:.3f}{stall}")
    if m.get("serving.replicas") is not None:
        lines.append(
            f"  - a peak of {m['serving.peak_rate_rps']:.1f} requests/s needs {m['serving.replicas']} replica(s): "
            f"${m['serving.usd_per_day']:.2f} per day, ${m['serving.usd_per_1m_output_tokens_at_peak']:.4f} per 1M "
            "output tokens"
        )
    return lines


def _decoding(workload: dict[str, Any]) -> str:
    """How the measured requests chose their tokens (a manifest from before `decoding` was recorded: greedily)."""
    d = recorded_decoding(workload)
    if d.greedy:
        return "greedy decoding"
    cuts = (f", top_p {d.top_p}" if d.top_p != 1.0 else "") + (f", top_k {d.top_k}" if d.top_k else "")
    return (f"every row sampling at temperature {d.temperature}{cuts} (its draws on the host are in every speed "
            "and cold-start figure; the snippet below decodes greedily)")


def cold_start(m: dict[str, Any], graphs: str | None, warmup: str, workload: dict[str, Any], batch: int) -> str:
    """The README's cold-start line: the measured load, its compiled graphs' part, the first request (after the
    candidate's warm-up strategy `warmup`; the workload's first shape)."""
    line = f"- cold start, in a fresh process: load {m['speed.load_s']:.1f} s"
    if m.get("speed.compile_s") is not None:
        how = {1: "read from inductor's on-disk cache", 0: "compiled"}.get(
            m.get("speed.compile_cache_warm"), "compiled, or read from a cache"
        )
        line += f", of which {m['speed.compile_s']:.1f} s on its compiled graphs ({how})"
    after = "without warm-up" if warmup == "none" else f"after the warm-up `{warmup}`"
    shape = f"{workload['prompt_lengths'][0]}-token prompt, {workload['output_lengths'][0]} new tokens, batch {batch}"
    line += f"; first request ({shape}) {after} {m['speed.cold_first_request_ms']:.1f} ms"
    if graphs:
        line += (f". The bundle ships those graphs (`{MODEL_DIR}/{graphs}/`): on a machine like the one that "
                 "exported it, a first load reads them instead of compiling")
    return line


def export_bundle(
    result: MeasureResult,
    artifact: Path,
    reference_npz: Path,
    workload: dict[str, Any],
    resolved_config: dict[str, Any],
    out_dir: Path,
    measured_in: dict[str, Any] | None = None,
) -> Path:
    """Write the bundle for `result` (built as `artifact`) to `out_dir`, replacing what was there.

    `workload` is the measured workload (prompt_lengths, output_lengths, name); `resolved_config` the
    run's resolved configuration, recorded as it is (a resumed sweep's is the last command's);
    `measured_in` the study and trial the result comes from. Returns `out_dir`. Raises ConfigError, before
    writing anything, where `out_dir` holds what is not a bundle (`destination_problem`).
    """
    out_dir = Path(out_dir)
    if problem := destination_problem(out_dir):
        raise ConfigError(problem)
    payload = manifest_payload(result, workload, resolved_config, measured_in)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        shutil.copytree(artifact, tmp / MODEL_DIR)
        # The runtime's own config files get the settings the figures were measured with, before hashing.
        engine = engine_class(result.candidate.engine)
        engine.write_runtime_config(tmp / MODEL_DIR, result.candidate, result.runtime)
        graphs = engine.write_compiled_graphs(tmp / MODEL_DIR)
        (tmp / REFERENCE).parent.mkdir()
        shutil.copyfile(reference_npz, tmp / REFERENCE)
        (tmp / README).write_text(readme(payload, graphs), encoding="utf-8")
        write_manifest(tmp, payload)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def destination_problem(out_dir: Path, name: str | None = None) -> str | None:
    """Why a bundle cannot be written to `out_dir` (called `name` in the message), in one line, or None. Writing one
    replaces the folder whole, which is meant for an earlier bundle (it holds manifest.json), an empty folder or
    none; any other folder's files would be deleted."""
    out_dir = Path(out_dir)
    name = name or str(out_dir)
    fix = "give a new or empty folder, or an earlier bundle's"
    if not out_dir.exists() and not out_dir.is_symlink():
        return None
    if not out_dir.is_dir():
        return f"{name} is not a folder; {fix}"
    try:
        if (out_dir / MANIFEST).is_file() or not any(out_dir.iterdir()):
            return None
    except OSError as e:
        return f"{name} cannot be read ({e.strerror}); {fix}"
    return (f"{name} holds files but no {MANIFEST}, so it is no autoopt bundle, and a bundle written there would "
            f"delete them; {fix}")


def _replace_dir(new: Path, dst: Path) -> None:
    """Swap `new` into `dst` by two renames: `dst` is never half-written, only briefly absent."""
    if not dst.exists():
        new.rename(dst)
        return
    old = new.with_name(new.name + ".old")
    dst.rename(old)
    try:
        new.rename(dst)
    except OSError:
        old.rename(dst)
        raise
    shutil.rmtree(old)
