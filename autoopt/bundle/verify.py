"""Verify a bundle: every file is the one exported, and re-measured on this machine it still shows
the accuracy and (within a loose factor) the speed its manifest records."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoopt.accuracy.metrics import fidelity
from autoopt.accuracy.reference import teacher_forced_logits
from autoopt.bench.latency import run_timed, warm_up
from autoopt.bench.requests import make_requests
from autoopt.bench.stats import summarize_ms
from autoopt.config.schema import BenchConfig
from autoopt.export.manifest import check_hashes
from autoopt.serve.bundle import LoadedBundle, load_bundle

log = logging.getLogger("autoopt.bundle")

REFERENCE = "verify/reference.npz"
# This kind of machine's speed swings 3-4x minute to minute; a tighter factor fails intact bundles.
DEFAULT_SPEED_FACTOR = 3.0
SPEED_FIGURES = ("speed.output_tokens_per_s", "speed.e2e_ms.p50")
VERIFY_BENCH_MIN_SECONDS = 2.0


def default_tolerances(speed_factor: float = DEFAULT_SPEED_FACTOR) -> dict[str, dict[str, float]]:
    """Per figure: `abs` + `rel` * |manifest| bounds |now - manifest|; `factor` bounds the ratio
    now / manifest both ways."""
    return {
        "accuracy.top1_agreement": {"abs": 0.005},
        "accuracy.kl_mean": {"rel": 0.10, "abs": 1e-6},
        "accuracy.perplexity": {"rel": 0.01},
        **{figure: {"factor": speed_factor} for figure in SPEED_FIGURES},
    }


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
    problems: list[str] = field(default_factory=list)  # integrity: files missing, extra or changed
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)


def load_reference(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:  # allow_pickle stays False
        return {k: z[k] for k in ("stream", "ids", "logits")}


def measure_speed(bundle: LoadedBundle, stream: np.ndarray) -> dict[str, float]:
    """The manifest's workload, warmed up as the candidate says, timed for a short while."""
    workload = bundle.manifest["workload"]
    requests = make_requests(
        stream, workload["prompt_lengths"], workload["output_lengths"], workload["batch_size"]
    )
    warm_up(bundle.engine, requests, bundle.candidate.warmup)
    bench = BenchConfig(
        warmup_runs=1, min_runs=len(requests), min_seconds=VERIFY_BENCH_MIN_SECONDS, max_seconds=60.0
    )
    samples = run_timed(bundle.engine, requests, bench)
    return {
        "speed.output_tokens_per_s": samples.output_tokens_per_s,
        "speed.e2e_ms.p50": summarize_ms([t.e2e_s for t in samples.timings]).p50,
    }


def measure_accuracy(bundle: LoadedBundle, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Teacher-forced fidelity to the fp32 reference, exactly as the search measured it."""
    ids = reference["ids"]
    fid = fidelity(reference["logits"], teacher_forced_logits(bundle.engine, ids), ids)
    return {
        "accuracy.top1_agreement": fid.top1_agreement,
        "accuracy.kl_mean": fid.kl_mean,
        "accuracy.perplexity": fid.perplexity,
    }


def verify_bundle(path: Path, speed_tolerance: float | None = None) -> Verification:
    """Check hashes; if intact, reload and re-measure the figures the manifest has tolerances for.

    `speed_tolerance` overrides the manifest's factor for the speed figures.
    """
    path = Path(path)
    t0 = time.perf_counter()
    problems = check_hashes(path)
    if problems:
        return Verification(problems=problems)
    log.info("verify · hashes ok · %.1fs", time.perf_counter() - t0)

    t0 = time.perf_counter()
    with load_bundle(path) as bundle:
        log.info("verify · load %s · %.1fs", bundle.candidate.engine, time.perf_counter() - t0)
        reference = load_reference(path / REFERENCE)
        t0 = time.perf_counter()
        now = measure_speed(bundle, reference["stream"])
        log.info("verify · speed · %.1fs", time.perf_counter() - t0)
        t0 = time.perf_counter()
        now |= measure_accuracy(bundle, reference)
        log.info("verify · accuracy · %.1fs", time.perf_counter() - t0)
        manifest = bundle.manifest

    tolerances = manifest["tolerances"]
    if speed_tolerance is not None:
        tolerances = {**tolerances, **{figure: {"factor": speed_tolerance} for figure in SPEED_FIGURES}}
    checks = [
        Check(figure, manifest["metrics"][figure]["value"], now[figure], tol)
        for figure, tol in tolerances.items()
    ]
    return Verification(checks=checks)


def format_checks(checks: list[Check]) -> str:
    rows = [("figure", "manifest", "now", "tolerance", "ok")]
    rows += [
        (c.figure, f"{c.manifest:.6g}", f"{c.now:.6g}", describe(c.tolerance), "yes" if c.ok else "NO")
        for c in checks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
