"""`python -m autoopt.serve DIR --prompt TEXT`: load a bundle, complete one prompt, print the completion
and its latency."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from autoopt.serve.bundle import load_bundle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autoopt.serve",
        description="Greedy completion of one prompt with an exported bundle. Prints the completion on "
        "stdout, then load time and end-to-end latency on stderr.",
    )
    parser.add_argument("bundle", type=Path, help="the bundle folder (holds manifest.json)")
    parser.add_argument("--prompt", required=True, help="text to complete")
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens to generate at most (default 32)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: the manifest's)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: the manifest's target"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest prompt + completion in tokens (default: the manifest's)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        bundle = load_bundle(
            args.bundle, threads=args.threads, device=args.device, max_length=args.max_length
        )
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    with bundle:
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


if __name__ == "__main__":
    sys.exit(main())
