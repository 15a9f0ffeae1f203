"""Verify a bundle: every file (and the manifest's own body) is the one exported, and re-measured on this
machine it still shows the accuracy and (within a loose factor) the speed its manifest records.

A fixed set of figures is always checked, within autoopt's built-in tolerances; a manifest may only
tighten them. Emptied or loosened tolerances fail verification, and so does an edited manifest whose
`manifest_sha256` was not recomputed; one whose hash was recomputed fails only against a pinned hash
(`manifest_sha256`, from a copy the caller trusts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoopt.accuracy.decode import decode_fidelity
from autoopt.accuracy.metrics import fidelity
from autoopt.accuracy.reference import teacher_forced_logits
from autoopt.bench.latency import run_timed, warm_up
from autoopt.bench.requests import make_requests
from autoopt.bench.stats import summarize_shapes
from autoopt.bundle.layout import REFERENCE
from autoopt.bundle.load import LoadedBundle, load_bundle
from autoopt.bundle.manifest import BODY_HASH, check_hashes, read_manifest, recorded_decoding
from autoopt.config.schema import BenchConfig
from autoopt.engines.base import SETTINGS_DIFFER

log = logging.getLogger("autoopt.bundle")

# This kind of machine's speed swings 3-4x minute to minute; a tighter factor fails intact bundles.
DEFAULT_SPEED_FACTOR = 3.0
SPEED_FIGURES = ("speed.output_tokens_per_s", "speed.e2e_ms.p50", "speed.tpot_ms.p50")
VERIFY_BENCH_MIN_SECONDS = 2.0
Tolerance = dict[str, float]
# Per figure: `abs` + `rel` * |manifest| bounds |now - manifest|; `factor` bounds now / manifest both ways.
_MINIMUM: dict[str, Tolerance] = {
    "accuracy.top1_agreement": {"abs": 0.005},
    "accuracy.kl_mean": {"rel": 0.10, "abs": 1e-6},
    "accuracy.perplexity": {"rel": 0.01},
    # One flipped near-tie moves a 32-token prefix by up to 1/4 of a prompt's share: looser than teacher-forced.
    "accuracy.decode_prefix_agreement": {"abs": 0.10},
    "accuracy.decode_token_agreement": {"abs": 0.05},
    **{figure: {"factor": DEFAULT_SPEED_FACTOR} for figure in SPEED_FIGURES},
}


# Checked where the manifest records them (bundles exported before a figure existed lack it; sampled agreement is
# measured under a sampling workload only).
_WHERE_RECORDED: dict[str, Tolerance] = {"accuracy.decode_self_agreement": {"abs": 0.05},
                                         "accuracy.sampled_agreement": {"abs": 0.005}}


def minimum_tolerances() -> dict[str, Tolerance]:
    """The figures verify always checks, with the loosest tolerance it accepts for each."""
    return {figure: dict(tol) for figure, tol in _MINIMUM.items()}


def no_looser(given: Tolerance, minimum: Tolerance) -> bool:
    """Whether `given` accepts no value that `minimum` rejects (an absent bound counts as 0)."""
    return all(key in minimum and value <= minimum[key] for key, value in given.items())


def effective_tolerances(recorded: object, speed_factor: float | None) -> tuple[dict[str, Tolerance], list[str]]:
    """The tolerances to check with, and the manifest's tolerance problems (missing or looser than the
    built-in minimum). `speed_factor`, the user's explicit choice on the command line, replaces the speed
    figures' factor."""
    if not isinstance(recorded, dict):
        return minimum_tolerances(), ["manifest.json has no tolerances table"]
    problems, tolerances = [], {}
    for figure, minimum in _MINIMUM.items():
        given = recorded.get(figure)
        if not isinstance(given, dict):
            problems.append(f"manifest.json has no tolerance for {figure}: verify always checks it")
            given = minimum
        elif not no_looser(given, minimum):
            problems.append(f"manifest.json loosens {figure} to {describe(given)}; the built-in minimum is {describe(minimum)}")
            given = minimum
        tolerances[figure] = dict(given)
    if speed_factor is not None:
        tolerances.update({figure: {"factor": speed_factor} for figure in SPEED_FIGURES})
    return tolerances, problems


def within(tolerance: dict[str, float], expected: float, actual: float) -> bool:
    if "factor" in tolerance:
        return (
            expected > 0 and actual > 0 and max(actual / expected, expected / actual) <= tolerance["factor"]
        )
    return abs(actual - expected) <= tolerance.get("abs", 0.0) + tolerance.get("rel", 0.0) * abs(expected)


def describe(tolerance: dict[str, float]) -> str:
    if "factor" in tolerance:
        return f"×/÷ {tolerance['factor']:g}"
    parts = []
    if "rel" in tolerance:
        parts.append(f"{tolerance['rel']:.0%}")
    if "abs" in tolerance:
        parts.append(f"{tolerance['abs']:g}")
    return "± " + " + ".join(parts)


@dataclass(frozen=True)
class Check:
    figure: str
    manifest: float
    now: float
    tolerance: dict[str, float]

    @property
    def ok(self) -> bool:
        return within(self.tolerance, self.manifest, self.now)


@dataclass
class Verification:
    # Before measuring (then no checks): files, manifest body, tolerances; after it: the settings model/ holds.
    problems: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)  # empty where a problem stopped it before measuring
    manifest_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks) and all(c.ok for c in self.checks)


REFERENCE_ARRAYS = ("stream", "ids", "logits", "decode_prompts", "decode_tokens")


def load_reference(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:  # allow_pickle stays False
        missing = [k for k in REFERENCE_ARRAYS if k not in z.files]
        if missing:
            raise RuntimeError(f"{path} has no {', '.join(missing)}: the bundle predates them; export it again")
        return {k: z[k] for k in REFERENCE_ARRAYS}


def measure_speed(bundle: LoadedBundle, stream: np.ndarray) -> dict[str, float]:
    """The manifest's workload, warmed up as the candidate says, timed for a short while."""
    workload = bundle.manifest["workload"]
    requests = make_requests(
        stream, workload["prompt_lengths"], workload["output_lengths"], workload["batch_size"],
        recorded_decoding(workload),
    )
    warm_up(bundle.engine, requests, bundle.candidate.warmup)
    bench = BenchConfig(
        warmup_runs=1, min_runs=len(requests), min_seconds=VERIFY_BENCH_MIN_SECONDS, max_seconds=60.0
    )
    samples = run_timed(bundle.engine, requests, bench)
    stats = summarize_shapes(samples.timings)
    return {
        "speed.output_tokens_per_s": samples.output_tokens_per_s,
        "speed.e2e_ms.p50": stats.e2e_ms.p50,
        "speed.tpot_ms.p50": stats.tpot_ms.p50,
    }


def measure_accuracy(bundle: LoadedBundle, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Teacher-forced and decode-path fidelity to the fp32 reference, exactly as the search measured them."""
    ids = reference["ids"]
    decoding = recorded_decoding(bundle.manifest["workload"])
    fid = fidelity(reference["logits"], teacher_forced_logits(bundle.engine, ids), ids, decoding)
    decode = decode_fidelity(bundle.engine, reference["decode_prompts"], reference["decode_tokens"])
    return {
        "accuracy.top1_agreement": fid.top1_agreement,
        **({} if fid.sampled_agreement is None else {"accuracy.sampled_agreement": fid.sampled_agreement}),
        "accuracy.kl_mean": fid.kl_mean,
        "accuracy.perplexity": fid.perplexity,
        "accuracy.decode_prefix_agreement": decode.prefix_agreement,
        "accuracy.decode_token_agreement": decode.token_agreement,
        "accuracy.decode_self_agreement": decode.self_agreement,
    }


def verify_bundle(
    path: Path, speed_tolerance: float | None = None, manifest_sha256: str | None = None
) -> Verification:
    """Check hashes and tolerances; if intact, reload and re-measure every checked figure.

    `speed_tolerance` overrides the speed figures' factor; `manifest_sha256`, when given, must equal the
    manifest body's hash (pinned from an earlier, trusted copy).
    """
    path = Path(path)
    t0 = time.perf_counter()
    problems = check_hashes(path)
    if problems:
        return Verification(problems=problems)
    manifest = read_manifest(path)
    body = manifest[BODY_HASH]
    if manifest_sha256 is not None and manifest_sha256 != body:
        problems.append(f"manifest.json body has SHA-256 {body}, not the pinned {manifest_sha256}")
    tolerances, tolerance_problems = effective_tolerances(manifest.get("tolerances"), speed_tolerance)
    problems += tolerance_problems
    if problems:
        return Verification(problems=problems, manifest_sha256=body)
    log.info("verify · hashes ok · %.1fs", time.perf_counter() - t0)
    if manifest_sha256 is None:
        log.warning("manifest.json is not pinned: its body hash is checked only against itself, which whoever edits "
                    "its figures can recompute; to pin them, pass --manifest-sha256 with the body SHA-256 that verify "
                    "printed for a copy you trust")

    t0 = time.perf_counter()
    with _settings_warnings() as differ, load_bundle(path) as bundle:
        log.info("verify · load %s · %.1fs", bundle.candidate.engine, time.perf_counter() - t0)
        reference = load_reference(path / REFERENCE)
        t0 = time.perf_counter()
        now = measure_speed(bundle, reference["stream"])
        log.info("verify · speed · %.1fs", time.perf_counter() - t0)
        t0 = time.perf_counter()
        now |= measure_accuracy(bundle, reference)
        log.info("verify · accuracy · %.1fs", time.perf_counter() - t0)

    checks = [Check(figure, manifest["metrics"][figure]["value"], now[figure], tol) for figure, tol in tolerances.items()]
    recorded = {f: manifest["metrics"].get(f, {}).get("value") for f in _WHERE_RECORDED}
    checks += [Check(f, value, now[f], dict(_WHERE_RECORDED[f])) for f, value in recorded.items() if value is not None]
    # Loaded with the manifest's own settings, any difference the engine reports is in the shipped files: the
    # runtime's own API, which reads them, would run other settings than the ones measured.
    problems = [f"model/ does not hold the measured settings: {message}" for message in differ]
    return Verification(checks=checks, problems=problems, manifest_sha256=body)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, SETTINGS_DIFFER, False):
            self.messages.append(record.getMessage())


@contextmanager
def _settings_warnings() -> Iterator[list[str]]:
    """The engines' warnings, during a load, that a bundle's runtime files hold other settings than it applies."""
    handler, engines = _Collect(), logging.getLogger("autoopt.engines")
    engines.addHandler(handler)
    try:
        yield handler.messages
    finally:
        engines.removeHandler(handler)


def format_checks(checks: list[Check]) -> str:
    rows = [("figure", "manifest", "now", "moved", "tolerance", "ok")]
    rows += [
        (c.figure, f"{c.manifest:.6g}", f"{c.now:.6g}", moved(c), describe(c.tolerance), "yes" if c.ok else "NO")
        for c in checks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def moved(c: Check) -> str:
    """How far a figure moved, in its tolerance's terms: now/manifest under a factor (e.g. "0.357×" for a speed
    that fell 2.8-fold), the signed difference under an absolute or relative one (a ratio of two near-zero KLs
    says nothing)."""
    if "factor" in c.tolerance:
        return f"{c.now / c.manifest:.3g}×" if c.manifest else "-"
    return f"{c.now - c.manifest:+.3g}"
