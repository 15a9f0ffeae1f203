"""What one measurement of one candidate produces. Every figure carries its unit in its name and
its definition in `DEFINITIONS`, which the bundle manifest and the reports repeat."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig
from autoopt.config.serde import from_dict, to_dict
from autoopt.config.serving import DEADLINE_STEMS, DEADLINES


@dataclass
class Percentiles:
    """A latency distribution in milliseconds over `n` samples; cv = stdev / mean."""

    p50: float
    p90: float
    p99: float
    mean: float
    cv: float
    n: int


@dataclass(frozen=True)
class ShapeStats:
    """Latency of the timed requests of one shape; each Percentiles' cv is the spread of its repeats
    (0.0 when the shape ran once: read it with n)."""

    prompt_len: int
    output_len: int  # generated tokens per row
    batch: int
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles


# Above this share of the CPUs taken by other work while a measurement ran (`autoopt.bench.contention`), its
# figures are said to be contended: a quarter of the CPUs is half a core of two.
CONTENDED_SHARE = 0.25


def contended(share: float | None) -> bool:
    """Whether other processes took enough of the CPUs (`share`, None: not measured) that a measurement's figures
    may say as much about that work as about the candidate."""
    return share is not None and share > CONTENDED_SHARE


@dataclass
class SpeedResult:
    runs: int
    cycles: int  # complete timed passes over every request shape
    seconds: float  # wall time of the timed runs
    burn_in_s: float
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    output_tokens_per_s: float
    load_s: float
    compile_s: float | None  # of load_s, the time spent compiling graphs (None: nothing compiled)
    warmup: str
    warmup_s: float
    cold_first_request_ms: float
    shapes: list[ShapeStats]
    ttft_cv_within_shape_median: float | None
    tpot_cv_within_shape_median: float | None
    e2e_cv_within_shape_median: float | None
    compile_cache_warm: bool | None = None  # the on-disk compile cache served compile_s's graphs (None: none compiled)
    other_cpu_share: float | None = None  # of the CPUs it may run on, taken by other processes during the timed runs


@dataclass
class MemoryResult:
    peak_rss_mb: float
    device_peak_mb: float | None
    artifact_mb: float


@dataclass
class AccuracyResult:
    kl_mean: float
    top1_agreement: float
    perplexity: float
    reference_perplexity: float
    tokens: int
    decode_prefix_agreement: float
    decode_token_agreement: float
    decode_tokens: int
    decode_self_agreement: float | None = None  # None: recorded before it was measured
    sampled_agreement: float | None = None  # None: measured under greedy decoding (its agreement is top-1's)

    @property
    def agreement(self) -> float:
        """The agreement the accuracy bar and the accuracy objective read: sampled agreement where the workload
        samples, else top-1 agreement (what sampled agreement tends to as the temperature falls)."""
        return self.top1_agreement if self.sampled_agreement is None else self.sampled_agreement


@dataclass
class CostResult:
    usd_per_1m_output_tokens: float
    price_per_hour: float
    target: str
    price_source: str


@dataclass(frozen=True)
class ServingClassResult:
    """One priority class in the highest-rate run that held every SLO (`ServingResult.capacity_rps`)."""

    slo_ms: float  # the end-to-end deadline (0: none; a class with no deadline is best effort)
    e2e_p99_ms: float | None
    ttft_p99_ms: float | None
    queue_p99_ms: float | None
    attainment: float
    goodput_rps: float
    rejected: int
    offered: int | None = None  # requests of this class in that run (None: recorded before it was kept)
    completed: int | None = None  # of them, finished: the samples behind the p99s
    itl_max_p99_ms: float | None = None  # p99 of each request's largest inter-token latency (None: not recorded)
    ttft_slo_ms: float = 0.0  # the first token's deadline (0: none)
    itl_slo_ms: float = 0.0  # the deadline on the longest wait between two tokens (0: none)

    @property
    def deadlines(self) -> str:
        return deadlines_in_words(self.slo_ms, self.ttft_slo_ms, self.itl_slo_ms)

    @property
    def judged(self) -> list[tuple[str, float]]:
        """(figure, deadline ms) for each figure whose p99 the class sets a deadline on; e2e at 0 for best effort."""
        figures = [(figure, getattr(self, name)) for name, figure in DEADLINES.items()]
        return [f for f in figures if f[1] > 0] or [(DEADLINES["slo_ms"], 0.0)]


def deadlines_in_words(slo_ms: float, ttft_slo_ms: float = 0.0, itl_slo_ms: float = 0.0) -> str:
    """A class's deadlines, e.g. "SLO 200 ms e2e, 50 ms to the first token"; "best effort" without any."""
    labels = ((slo_ms, "e2e"), (ttft_slo_ms, "to the first token"), (itl_slo_ms, "between two tokens"))
    parts = [f"{ms:.0f} ms {label}" for ms, label in labels if ms]
    return "SLO " + ", ".join(parts) if parts else "best effort"


@dataclass(frozen=True)
class ServingProbe:
    """One run of the capacity search: the offered rate, whether every SLO held, and what each class got."""

    rate_rps: float
    holds: bool
    why_not: list[str]
    completed_rps: float  # requests completed / the longer of the arrival window and the run (start to last token)
    e2e_p99_ms: dict[str, float | None]  # per class; None where none completed
    completed: dict[str, int]  # per class: the samples behind its p99
    utilization: float | None = None  # seconds running batches / the arrival window (None: recorded before it was kept)
    ttft_p99_ms: dict[str, float | None] = field(default_factory=dict)  # per class ({}: recorded before it was kept)
    itl_max_p99_ms: dict[str, float | None] = field(default_factory=dict)  # per class, as above

    def p99(self, figure: str) -> dict[str, float | None]:
        """Per class, the p99 of `figure` (a `DEADLINES` figure: see `ServingClassResult.judged`)."""
        return {DEADLINES[name]: getattr(self, f"{stem}_p99_ms") for name, stem in DEADLINE_STEMS.items()}[figure]


@dataclass(frozen=True)
class ServingResult:
    """Open-loop serving with the candidate's batcher and scheduler: its capacity, and what a peak costs."""

    capacity_rps: float  # highest offered rate at which every class with an SLO held it (0: none did)
    converged: bool  # bracketed within 5 % (False: the probe budget ran out first)
    probes: int
    max_batch: int
    occupancy: float | None  # mean rows per batch / max_batch, at capacity
    peak_rate_rps: float
    replicas: int | None  # for the peak rate (None when no rate held)
    usd_per_day: float | None
    usd_per_1m_output_tokens_at_peak: float | None
    classes: dict[str, ServingClassResult]
    load_curve: list[ServingProbe] = field(default_factory=list)  # every probe, in the order run ([]: recorded before)
    warmup_s: float | None = None  # each probe's warm-up, served but not judged (None: recorded before it was kept)
    judged_s: float | None = None  # each probe's judged arrivals' span after it (None: as above) ...
    min_judged: int | None = None  # ... or the span that offered this many where longer (None: recorded before it)
    mixed_lengths: bool | None = None  # free rows of a batch could take shorter prompts, padded (None: recorded before)
    continuous: bool | None = None  # requests joined and left a running batch between decode steps (None: as above)
    other_cpu_share: float | None = None  # of the CPUs it may run on, taken by other processes over the capacity search


@dataclass(frozen=True)
class OpTime:
    """One operator type's share of a phase: `ms` of self time over the phase's steps, `share` of the
    phase's profiled total, `calls` how many times it ran."""

    op: str
    ms: float
    share: float
    calls: int


@dataclass(frozen=True)
class PhaseProfile:
    """One phase of the profiled request.

    `profiled_ms`: the sum of every op type's self time (not only `top`) in the least-disturbed repeat.
    `profiled_wall_ms`: that repeat's wall time of the phase (profiler overhead included). `wall_ms`: the
    phase's wall time of the same request, unprofiled (`time_phases`).
    """

    phase: str
    steps: int
    profiled_ms: float
    profiled_wall_ms: float
    wall_ms: float
    top: tuple[OpTime, ...]

    @property
    def coverage(self) -> float:
        """profiled_ms / wall_ms: op time against the unprofiled time (see COVERAGE_MARGIN)."""
        return self.profiled_ms / self.wall_ms if self.wall_ms > 0 else float("nan")

    @property
    def accounted(self) -> float:
        """profiled_ms / profiled_wall_ms: the share of the profiled run's time inside ops."""
        return self.profiled_ms / self.profiled_wall_ms if self.profiled_wall_ms > 0 else float("nan")


@dataclass(frozen=True)
class Profile:
    """Where one request's time goes, per phase; `unavailable` says why there are no phases."""

    engine: str
    profiler: str
    batch: int
    prompt_len: int
    new_tokens: int
    repeats: int
    phases: tuple[PhaseProfile, ...] = ()
    unavailable: str | None = None

    def phase(self, name: str) -> PhaseProfile:
        for phase in self.phases:
            if phase.phase == name:
                return phase
        raise KeyError(f"profile of {self.engine} has no phase {name!r} ({self.unavailable or 'phases: prefill, decode'})")


@dataclass(frozen=True)
class Bandwidth:
    """Measured copy bandwidth in GB/s (1e9 bytes): the best sample, every sample, and how."""

    gb_per_s: float
    samples: tuple[float, ...]
    buffer_bytes: int
    threads: int
    llc_bytes: int | None
    method: str


@dataclass(frozen=True)
class Roofline:
    """One candidate's decode against the memory roofline.

    weight_bytes, kv_bytes, bytes_per_step: bytes per decode step. steps_per_s: decode steps per second
    measured (1 / TPOT). bandwidth_gb_per_s: `Bandwidth.gb_per_s`. bound_steps_per_s: bandwidth /
    bytes_per_step. efficiency: steps_per_s / bound_steps_per_s. fits_llc: bytes_per_step <= the last-level
    cache (then DRAM bandwidth is not the limit and efficiency can exceed 1).
    """

    weight_bytes: int
    kv_bytes: float
    mean_context: float
    bytes_per_step: float
    steps_per_s: float
    bandwidth_gb_per_s: float
    bound_steps_per_s: float
    efficiency: float
    fits_llc: bool | None

    def note(self) -> str:
        """Why an efficiency may read above 1, or "": the working set fits the last-level cache; or it does not, and
        decode still ran above the measured DRAM bound (part of each step's bytes came from the caches, which keep
        much of a set a little larger than themselves from step to step, or the bandwidth measured low); or, where
        the cache size is unknown (a GPU target's declared bandwidth), the figure to check."""
        if self.fits_llc:
            return "fits the last-level cache"
        if self.efficiency <= 1:
            return ""
        if self.fits_llc is None:
            return "above the declared bandwidth: check its figure"
        return "above the measured DRAM bound: part of each step's bytes may come from the caches, or it measured low"


@dataclass(frozen=True)
class Built:
    """A built artifact: where it is, its build key (model, passes, settings, library versions), its steps."""

    artifact: Path
    key: str
    sha256: str  # of the artifact folder's files (`autoopt.digest.tree_sha256`): what was measured
    steps: list[str]
    cached: bool  # True when every step came from the cache
    seconds: float  # wall time spent building in this call (0 when every step was cached)
    build_seconds: float  # wall time the steps took when they were first built


@dataclass
class MeasureResult:
    """One measurement. `runtime` holds the settings the engine was loaded with, resolved once; a bundle
    copies them. `reference_sha256` identifies the fp32 reference the accuracy was measured against."""

    candidate: CandidateConfig
    target: str
    model: dict[str, Any]
    runtime: RuntimeOptions
    build: Built
    reference_sha256: str
    speed: SpeedResult
    memory: MemoryResult
    accuracy: AccuracyResult
    cost: CostResult
    serving: ServingResult | None = None  # measured when the search objective is serving
    profile: Profile | None = None  # where one representative request's time goes, per phase
    roofline: Roofline | None = None  # decode against the memory bandwidth
    env: dict[str, Any] = field(default_factory=dict)

    def busiest_share(self) -> float | None:
        """The most of the CPUs other processes took during its timed requests or its capacity search."""
        shares = [s for s in (self.speed.other_cpu_share, self.serving and self.serving.other_cpu_share)
                  if s is not None]
        return max(shares) if shares else None

    def contended(self) -> bool:
        """Whether other work took enough of the CPUs during either (`contended`)."""
        return contended(self.busiest_share())

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureResult:
        return from_dict(cls, d)


DEFINITIONS: dict[str, str] = {
    "speed.ttft_ms": "time to first token: prefill + first greedy token, host-visible, warm, per request batch, "
    "over all timed requests (cv spans request shapes: see ttft_cv_within_shape_median for noise)",
    "speed.tpot_ms": "time per output token after the first, per row: (e2e - ttft) / (output tokens per row - 1), "
    "one decode step of the whole request batch (b rows make b tokens in it), warm, over all timed requests",
    "speed.e2e_ms": "end-to-end latency of one request batch: prompt in, last token on the host, warm, "
    "over all timed requests",
    "speed.shapes": "per request shape (prompt_len, output_len, batch): ttft/tpot/e2e percentiles (ms) over the "
    "timed repeats of that shape; cv = stdev/mean across those repeats (0 when n = 1)",
    "speed.ttft_cv_within_shape_median": "median over request shapes timed >= 2 times of the TTFT cv across "
    "repeats of the same shape: run-to-run noise; None if no shape repeated",
    "speed.tpot_cv_within_shape_median": "median over request shapes timed >= 2 times of the TPOT cv across "
    "repeats of the same shape; None if no shape repeated",
    "speed.e2e_cv_within_shape_median": "median over request shapes timed >= 2 times of the e2e cv across "
    "repeats of the same shape; None if no shape repeated",
    "speed.cycles": "complete timed passes over every request shape; each shape was timed this many times",
    "speed.burn_in_s": "seconds of the untimed burn-in: bench.warmup_runs full passes over every request shape, "
    "after the cold first request",
    "speed.output_tokens_per_s": "generated tokens (all rows of the batch) / wall time of the timed runs",
    "speed.load_s": "seconds from process start of loading to an engine ready to generate (cold)",
    "speed.compile_s": "seconds of the load spent compiling graphs (torch_compiled), part of load_s and cold start",
    "speed.compile_cache_warm": "1 where inductor's on-disk cache served the compiled graphs (so compile_s was mostly a "
    "cache read), 0 where it compiled from scratch; absent where nothing was compiled",
    "speed.warmup_s": "seconds the warm-up strategy spent before the first timed request",
    "speed.other_cpu_share": "share of the time of the CPUs the measuring process may run on that other processes "
    "took during the timed runs (0: otherwise idle); above 0.25 the figures are marked contended",
    "speed.cold_first_request_ms": "e2e latency of the first request after load and warm-up: the workload's first "
    "prompt length and first output length, at the measured batch size",
    "memory.peak_rss_mb": "peak resident set size of the measuring process after load, warm-up and timed runs",
    "memory.device_peak_mb": "peak accelerator memory allocated by the runtime (None on CPU)",
    "memory.artifact_mb": "size on disk of the built artifact folder",
    "accuracy.kl_mean": "mean over positions of KL(reference || candidate), nats, teacher-forced held-out text",
    "accuracy.top1_agreement": "fraction of positions where the candidate's argmax equals the reference's",
    "accuracy.sampled_agreement": "under a sampling workload: mean over positions of the probability mass that what "
    "the candidate and the reference sample from at the workload's temperature, top_k and top_p have in common "
    "(1 - total variation distance: the highest chance that some pairing of the two draws picks the same token); "
    "teacher-forced",
    "accuracy.perplexity": "candidate perplexity on the held-out windows (next-token, teacher-forced)",
    "accuracy.reference_perplexity": "fp32 torch reference perplexity on the same windows",
    "accuracy.decode_prefix_agreement": "mean over held-out prompts of the fraction of the fp32 reference's greedy "
    "continuation that the candidate's own generate() (KV-cache decode path) reproduces before its first "
    "differing token",
    "accuracy.decode_token_agreement": "fraction of generated positions where the candidate's own generate() token "
    "equals the reference's greedy token (contexts differ after a divergence)",
    "accuracy.decode_tokens": "generated positions compared: decode prompts x new tokens per prompt",
    "accuracy.decode_self_agreement": "fraction of the candidate's own generate() tokens (KV-cache decode path) "
    "that its own teacher-forced logits() pick on the same context: 1.0 up to near-ties between the two paths' "
    "kernels; far below where the decode path computes something else than the model the accuracy figures "
    "describe",
    "cost.usd_per_1m_output_tokens": "price_per_hour / (output_tokens_per_s * 3600) * 1e6",
    "serving.other_cpu_share": "share of the time of the CPUs the measuring process may run on that other processes "
    "took over the whole capacity search (0: otherwise idle); above 0.25 the figures are marked contended",
    "serving.capacity_rps": "highest offered request rate (open loop, latency from each scheduled send time) at "
    "which every class with an SLO kept its e2e p99 within its deadline for >= min_attainment of its requests "
    "(those sent after the probe's warm-up, workload.serving.warmup_s, which is load only), with prompts of "
    "the workload's lengths (where serving.continuous is 1, requests of any length join the running batch between "
    "decode steps and leave it at their last token; where serving.mixed_lengths is 1, rows a batch's lead length "
    "leaves free may take shorter prompts, padded to the lead's length; otherwise one length per batch, so more "
    "varied lengths fill fewer rows); "
    "raising the rate (autoopt.serving.capacity.next_up), then narrowing to 5 % (next_rate)",
    "profile.phases": "one representative request (middle prompt length, shortest output), on a separate "
    "profiled load after the timed runs: per phase (prefill = first generate step, decode = the rest) the top "
    "op types by self time from the runtime's own profiler (torch.profiler / ONNX Runtime profiling): ms, "
    "share of all op time, calls; the least disturbed of `repeats` runs",
    "roofline.bytes_per_step": "bytes one decode step must read: weights at stored precision (an embedding read "
    "by Gather counts one row per sequence) + KV cache at the workload's mean decode context (at the whole "
    "preallocated length for static caches whose attention reads all of it: torch kv_cache=static, torch_compiled)",
    "roofline.efficiency": "bytes_per_step x decode steps/s (1000 / TPOT p50) / bandwidth: the measured copy bandwidth on CPU "
    "targets, the target's declared memory_bandwidth_gbps (bandwidth_source) elsewhere; above 1 the bound did not "
    "bind: the working set fits the last-level cache (fits_llc), or is a little larger and was partly served from "
    "it, or the bandwidth measured low",
    "serving.classes": "per priority class, in the highest-rate run that held every SLO: p99 of e2e, TTFT, "
    "queue time and each request's largest inter-token latency (itl_max: the longest wait between two of its "
    "tokens) over its completed requests (`completed` is that sample count, `offered` the requests sent), "
    "attainment, goodput, rejections; its deadlines (0 where unset): slo_ms on e2e, ttft_slo_ms on TTFT, "
    "itl_slo_ms on itl_max",
    "serving.replicas": "replicas the workload's peak rate needs at that capacity",
    "serving.load_curve": "every run of the capacity search, in order: offered rate, whether every SLO held (and "
    "why not), completed requests per second of the run, utilization (seconds the engine ran batches / the "
    "arrival window; above 1 it cannot keep up), and per class the p99 (ms) of e2e, TTFT and each request's longest "
    "wait between two tokens, with its completed count",
    "serving.usd_per_day": "replicas x price_per_hour x 24",
    "serving.usd_per_1m_output_tokens_at_peak": "the replicas' price per hour / output tokens per hour served at "
    "the peak rate x 1e6, at the workload's mean output length per request",
}
