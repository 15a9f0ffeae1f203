"""`python -m autoopt.bundle verify DIR [--speed-tolerance X]`: exit 0 only if the bundle is intact and
re-measures within the tolerances its manifest records."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from autoopt.bundle.load import reexec_with_runtime_env
from autoopt.bundle.verify import DEFAULT_SPEED_FACTOR, Verification, format_checks, verify_bundle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autoopt.bundle", description="Work with an exported bundle."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check the bundle's hashes, then re-measure its accuracy and speed against its manifest",
        description="Check every file's SHA-256 against manifest.json; then reload the bundle, re-measure "
        "accuracy on verify/reference.npz and speed on the manifest's workload, and compare with the "
        "manifest's figures. Exit 0 only if everything is within tolerance.",
    )
    verify.add_argument("bundle", type=_folder, help="the bundle folder (holds manifest.json)")
    verify.add_argument(
        "--speed-tolerance",
        type=_factor,
        default=None,
        metavar="X",
        help="accept output tokens/s, e2e p50 and TPOT p50 within a factor X of the manifest's, either way "
        f"(default: the manifest's, at most {DEFAULT_SPEED_FACTOR:g}, because a shared machine's speed can "
        "swing 3-4x minute to minute; use a smaller factor on a quiet, dedicated one)",
    )
    verify.add_argument(
        "--manifest-sha256",
        default=None,
        metavar="HEX",
        help="the manifest body's SHA-256 as printed by an earlier verify (or kept elsewhere): fail unless equal",
    )
    return parser.parse_args(argv)


def _folder(text: str) -> Path:
    """An argparse type: a folder that exists (else the subcommand's usage and one line naming the path)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return path


def _factor(text: str) -> float:
    """An argparse type: a speed factor, at least 1 (finite)."""
    value = float(text)
    if not 1 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a factor >= 1 (e.g. 1.5)")
    return value


_factor.__name__ = "factor"  # argparse's "invalid factor value: 'x'"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if argv is None:  # a command: measure with the allocator settings the bundle was measured with
        reexec_with_runtime_env(args.bundle, "autoopt.bundle", sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = verify_bundle(args.bundle, args.speed_tolerance, args.manifest_sha256)
    except RuntimeError as e:  # an engine that cannot run here says why in one line
        print(f"error: {e}", file=sys.stderr)
        return 1
    return report(args.bundle, result)


def report(bundle: Path, result: Verification) -> int:
    """Print `result`, and return the exit status: the checks table wherever the bundle was re-measured, and its
    problems under a header that says whether they stopped it before any measurement or were found after it."""
    if result.manifest_sha256:
        print(f"manifest.json body SHA-256: {result.manifest_sha256}")
    if result.checks:
        print(format_checks(result.checks))
    if result.problems:
        when = "after re-measuring" if result.checks else "before any measurement"
        print(f"bundle {bundle} fails verification {when}:")
        print("\n".join(f"  {problem}" for problem in result.problems))
    if result.checks and not all(check.ok for check in result.checks):
        print("FAILED: some figures are outside their tolerance")
    elif result.ok:
        print("OK: within tolerance")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
