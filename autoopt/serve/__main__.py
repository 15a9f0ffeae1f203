"""`python -m autoopt.serve DIR --host 127.0.0.1 --port N`: serve a bundle over HTTP (OpenAI API, see
`autoopt.serve.app`). `python -m autoopt.serve DIR --prompt TEXT`: complete one prompt, print the
completion and its latency."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from autoopt.bundle.load import LoadedBundle, load_bundle, reexec_with_runtime_env
from autoopt.bundle.manifest import recorded_serving
from autoopt.config.errors import ConfigError
from autoopt.config.serving import BATCHING, ServingConfig, check_serving
from autoopt.serving.engine_thread import EngineThread
from autoopt.serving.runner import continuous
from autoopt.signals import Stopped, stopping_on_signals


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autoopt.serve",
        description="Serve an exported bundle over HTTP (OpenAI-compatible), or with --prompt complete one "
        "prompt: the completion on stdout, load time and end-to-end latency on stderr.",
    )
    parser.add_argument("bundle", type=Path, help="the bundle folder (holds manifest.json)")
    parser.add_argument("--prompt", default=None, help="complete this text once and exit instead of serving")
    parser.add_argument("--max-new-tokens", type=_at_least(1), default=32, help="--prompt: tokens to generate at most")
    parser.add_argument("--threads", type=_at_least(1), default=None, help="intra-op threads (default: the manifest's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the manifest's target")
    parser.add_argument("--max-length", type=_at_least(2), default=None,
                        help="longest prompt + completion in tokens (default: the manifest's)")
    serving = parser.add_argument_group("serving", "all but --host, --port and --log-level (which the Docker images "
                                        "always pass) are refused with --prompt, which serves nothing")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serving.add_argument("--port", type=_at_least(0, 65535), default=8000, help="port (default 8000)")
    serving.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    flags = [  # default None: a flag given is one not None
        serving.add_argument("--model-name", help="the model id clients send (default: the bundle's folder name)"),
        serving.add_argument("--max-batch", type=_at_least(1),
                             help="rows per engine call (default: the bundle's candidate.serving_max_batch)"),
        serving.add_argument("--max-queue-delay-ms", type=_milliseconds(positive=False),
                             help="release a partial batch once its oldest request waited this long "
                             "(default: the bundle's candidate.serving_queue_delay_ms)"),
        serving.add_argument("--policy", choices=("strict", "weighted"),
                             help="default: the bundle's candidate.serving_policy"),
        serving.add_argument("--mix-lengths", action=argparse.BooleanOptionalAction,
                             help="fill a batch's free rows with shorter prompts, padded (default: the bundle's "
                             "candidate.serving_mix_lengths)"),
        serving.add_argument("--batching", choices=BATCHING,
                             help="group: a batch runs until its longest row is done; continuous: requests join and "
                             "leave the running batch between decode steps (default: the bundle's "
                             "candidate.serving_batching)"),
        serving.add_argument("--prefill-chunk", type=_at_least(0),
                             help="continuous batching: prefill joining prompts at most this many tokens before each "
                             "decode step (0: each whole; default: the bundle's candidate.serving_prefill_chunk, 0 "
                             "under group batching)"),
        serving.add_argument("--starvation-ms", type=_milliseconds(positive=True),
                             help="a request waiting longer is served regardless of class (default: the bundle's "
                             "workload.serving.starvation_ms)"),
    ]
    args = parser.parse_args(argv)
    given = [_flag_name(flag) for flag in flags if getattr(args, flag.dest) is not None]
    if args.prompt is not None and given:
        parser.error(f"{', '.join(given)}: serving flags do nothing with --prompt (it completes one prompt and "
                     "serves nothing); leave them out, or leave out --prompt to serve")
    return args


def _flag_name(flag: argparse.Action) -> str:
    """How a flag is named in a message: --[no-]mix-lengths for a switch, which either spelling sets."""
    name = flag.option_strings[0]
    return f"--[no-]{name[2:]}" if isinstance(flag, argparse.BooleanOptionalAction) else name


def _milliseconds(positive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of milliseconds, > 0 where `positive`, else >= 0."""
    bound = "> 0" if positive else ">= 0"

    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"{text} is not a number of milliseconds {bound}")
        return value

    parse.__name__ = "number"  # argparse's "invalid number value: 'x'"
    return parse


def _at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; argparse names the option in its one-line error."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not an integer in [{low}, {high if high is not None else '...'}]")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value: 'x'"
    return parse


def measured_under_load(bundle: LoadedBundle) -> bool:
    """Whether the bundle's batcher settings were measured (a serving search). Otherwise (a latency search, one
    request at a time) they are the knobs' defaults, and `serve` runs without a queue delay: it would add to every
    request that arrives alone, which the measured latency never had."""
    return "serving.capacity_rps" in bundle.manifest.get("metrics", {})


def serving_config(args: argparse.Namespace, bundle: LoadedBundle) -> ServingConfig:
    """The bundle's measured batcher and scheduler settings, with the command line's overrides."""
    measured = recorded_serving(bundle.manifest)
    c = bundle.candidate
    max_batch = c.serving_max_batch if args.max_batch is None else args.max_batch
    delay = c.serving_queue_delay_ms if args.max_queue_delay_ms is None else args.max_queue_delay_ms
    if args.max_queue_delay_ms is None and not measured_under_load(bundle):
        delay = 0.0  # see measured_under_load
    if max_batch > bundle.runtime.max_batch:
        print(f"note: --max-batch {max_batch} lowered to the bundle's max_batch {bundle.runtime.max_batch}",
              file=sys.stderr)
        max_batch = bundle.runtime.max_batch
    starvation_ms = measured.starvation_ms if args.starvation_ms is None else args.starvation_ms
    batching = args.batching or c.serving_batching
    chunk = args.prefill_chunk
    if chunk is None:  # the bundle's, where it batches continuously (a group batch prefills its prompts together)
        chunk = c.serving_prefill_chunk if batching == "continuous" else 0
    cfg = replace(measured, max_batch=max_batch, max_queue_delay_ms=delay,
                  policy=args.policy or c.serving_policy, starvation_ms=starvation_ms,
                  mix_lengths=c.serving_mix_lengths if args.mix_lengths is None else args.mix_lengths,
                  batching=batching, prefill_chunk=chunk)
    check_serving(cfg)
    return cfg


def crowded_cpus(threads: int) -> str:
    """Why `threads` intra-op threads may not serve as the manifest measured them in process, or "": they take every
    CPU this process may use, and the HTTP event loop (and anything else run on the machine) competes with them."""
    cpus = len(os.sched_getaffinity(0))
    if threads < cpus or cpus < 2:
        return ""
    return (f"the engine's {threads} intra-op threads take every CPU this server may use ({cpus}): its HTTP event "
            f"loop, and anything else run here, compete with them. Compare --threads {cpus - 1} with python -m "
            "autoopt.serve.loadtest on the machine as it will run (experiments/2026-11-29-http-load.md: with 2 threads "
            "on 2 CPUs an ort_genai bundle missed its P0 deadline while a test run shared the machine, where 1 thread "
            "held)")


def one_prompt(bundle: LoadedBundle, args: argparse.Namespace, load_s: float) -> int:
    t0 = time.perf_counter()
    try:
        text = bundle.generate_text(args.prompt, args.max_new_tokens)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    e2e_ms = (time.perf_counter() - t0) * 1e3
    print(text)
    print(
        f"load {load_s:.2f}s · e2e {e2e_ms:.1f} ms (first request after load, batch 1, "
        f"{bundle.runtime.threads} threads, {bundle.candidate.engine} on {bundle.runtime.device})",
        file=sys.stderr,
    )
    return 0


def serve_bundle(bundle: LoadedBundle, args: argparse.Namespace, engine: EngineThread) -> int:
    from autoopt.serve.app import ServedModel
    from autoopt.serve.server import serve

    try:
        cfg = serving_config(args, bundle)
        continuous(cfg, bundle.engine)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not measured_under_load(bundle):
        print("note: this bundle was measured one request at a time, not under load, so its batcher settings were "
              f"not measured: queue delay {cfg.max_queue_delay_ms:g} ms, up to {cfg.max_batch} rows a batch "
              "(--max-queue-delay-ms and --max-batch set others)", file=sys.stderr)
    if crowded := crowded_cpus(bundle.runtime.threads):
        print(f"note: {crowded}", file=sys.stderr)
    name = args.model_name or bundle.path.resolve().name
    # Before the port opens (and /health answers): the first requests would otherwise pay the runtime's one-time
    # costs, which neither the cold-start figure (measured after the candidate's warm-up) nor the capacity has.
    seconds = engine.run(lambda: bundle.warm_up(cfg.max_batch, stream=continuous(cfg, bundle.engine),
                                                prefill_chunk=cfg.prefill_chunk))
    print(f"warmed up every prompt length of the measured workload at batch 1..{cfg.max_batch} in {seconds:.1f}s",
          file=sys.stderr)
    model = ServedModel(bundle.engine, bundle.tokenizer, name, bundle.runtime.max_length, bundle.end_ids)
    print(f"serving {name!r} ({bundle.candidate.engine} on {bundle.runtime.device}, max_batch {cfg.max_batch}, "
          f"policy {cfg.policy}, {cfg.batching} batching) on http://{args.host}:{args.port}/v1", file=sys.stderr)
    serve(model, cfg, args.host, args.port, log_level=args.log_level, engine_thread=engine)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if argv is None:  # a command: run with the allocator settings the bundle was measured with
        reexec_with_runtime_env(args.bundle, "autoopt.serve", sys.argv[1:])
    # Every call into the engine, its load first, on one thread: the server's worker runs there
    # (`autoopt.serving.engine_thread`: torch's parallel regions slow down on a thread other than the first to run one).
    engine = EngineThread()
    with stopping_on_signals():
        try:
            code = _run(args, engine)
        except Stopped as e:
            if e.cut_off:
                print(f"stopped ({e}): {e.cut_off}", file=sys.stderr)
                code = 1
            else:
                print(f"stopped ({e}); no request was left unanswered", file=sys.stderr)
                code = 0
    if engine.busy:  # stopped mid-load, mid-warm-up or with rows cut off: torch torn down under it would abort
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace, engine: EngineThread) -> int:
    t0 = time.perf_counter()
    try:
        bundle = engine.run(lambda: load_bundle(args.bundle, threads=args.threads, device=args.device,
                                                max_length=args.max_length))
    except (ConfigError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError) as e:  # e.g. a manifest.json that is not JSON or lacks a field
        print(f"error: bundle {args.bundle} cannot be loaded: {type(e).__name__}: {e}; `python -m autoopt.bundle "
              f"verify {args.bundle}` names what is missing or changed, or export the bundle again", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    try:
        if args.prompt is not None:
            return engine.run(lambda: one_prompt(bundle, args, load_s))
        return serve_bundle(bundle, args, engine)
    finally:
        if not engine.busy:  # else the process ends at once (`main`): closing it under a running step is unsafe
            engine.run(bundle.close)


if __name__ == "__main__":
    sys.exit(main())
