"""What one measurement of one candidate produces. Every figure carries its unit in its name and
its definition in `DEFINITIONS`, which the bundle manifest and the reports repeat."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Percentiles:
    """A latency distribution in milliseconds over `n` samples; cv = stdev / mean."""

    p50: float
    p90: float
    p99: float
    mean: float
    cv: float
    n: int


@dataclass
class SpeedResult:
    batch_size: int
    threads: int
    runs: int
    seconds: float  # wall time of the timed runs
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    output_tokens_per_s: float
    load_s: float
    warmup: str
    warmup_s: float
    cold_first_request_ms: float


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


@dataclass
class CostResult:
    usd_per_1m_output_tokens: float
    price_per_hour: float
    target: str
    price_source: str


@dataclass
class BuildInfo:
    seconds: float
    build_seconds: float
    cached: bool
    steps: list[str]
    key: str


@dataclass
class MeasureResult:
    candidate: dict[str, Any]
    target: str
    model: dict[str, Any]
    build: BuildInfo
    speed: SpeedResult
    memory: MemoryResult
    accuracy: AccuracyResult
    cost: CostResult
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureResult:
        speed = dict(d["speed"])
        for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
            speed[k] = Percentiles(**speed[k])
        return cls(
            candidate=d["candidate"],
            target=d["target"],
            model=d["model"],
            build=BuildInfo(**d["build"]),
            speed=SpeedResult(**speed),
            memory=MemoryResult(**d["memory"]),
            accuracy=AccuracyResult(**d["accuracy"]),
            cost=CostResult(**d["cost"]),
            env=d.get("env", {}),
        )


DEFINITIONS: dict[str, str] = {
    "speed.ttft_ms": "time to first token: prefill + first greedy token, host-visible, warm, per request batch",
    "speed.tpot_ms": "time per output token after the first: (e2e - ttft) / (output tokens - 1), warm",
    "speed.e2e_ms": "end-to-end latency of one request batch: prompt in, last token on the host, warm",
    "speed.output_tokens_per_s": "generated tokens (all rows of the batch) / wall time of the timed runs",
    "speed.load_s": "seconds from process start of loading to an engine ready to generate (cold)",
    "speed.warmup_s": "seconds the warm-up strategy spent before the first timed request",
    "speed.cold_first_request_ms": "e2e latency of the first request after load and warm-up",
    "memory.peak_rss_mb": "peak resident set size of the measuring process after load, warm-up and timed runs",
    "memory.device_peak_mb": "peak accelerator memory allocated by the runtime (None on CPU)",
    "memory.artifact_mb": "size on disk of the built artifact folder",
    "accuracy.kl_mean": "mean over positions of KL(reference || candidate), nats, teacher-forced held-out text",
    "accuracy.top1_agreement": "fraction of positions where the candidate's argmax equals the reference's",
    "accuracy.perplexity": "candidate perplexity on the held-out windows (next-token, teacher-forced)",
    "accuracy.reference_perplexity": "fp32 torch reference perplexity on the same windows",
    "cost.usd_per_1m_output_tokens": "price_per_hour / (output_tokens_per_s * 3600) * 1e6",
}
