"""Serving metrics per priority class and overall, from per-request timestamps.

Definitions (all latencies from the request's SCHEDULED send time, in ms):
- queue: batch start (continuous: the request's own prefill) - arrival; TTFT: first token - arrival;
  e2e: last token - arrival;
  TPOT: (last token - first token) / (tokens - 1), for requests with at least 2 tokens;
  largest ITL: the longest wait between two consecutive tokens of a request, at least 2 tokens (what a streaming
  client sees stall, as when another request's prefill holds the decode step).
- attainment: requests that completed within every deadline their class sets (last token, first token, longest
  wait between two tokens: `ServingClassConfig`) / requests offered (rejected and unfinished ones count as
  misses); a best-effort class (no deadline) counts every completed request.
- goodput: requests meeting their SLO per second of the run.
- occupancy: mean rows per batch / max_batch.
- utilization: seconds the engine ran batches / the arrival window: the warm-up's seconds plus offered / rate
  (the span `autoopt.serving.loadgen.make_arrivals` spreads the judged requests over). Above 1 the run
  offered more work than the engine can do in that time.

A run may start with a warm-up (`warmup_s`): its requests load the engine but are not judged. Every figure
but utilization and drain counts only the requests sent after it (and the batches started after it), and
`duration_s` starts at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autoopt.config.serving import DEADLINE_STEMS, ServingClassConfig

DONE, REJECTED, UNFINISHED = "done", "rejected", "unfinished"


@dataclass
class RequestRecord:
    """Timestamps of one request on the run's clock (seconds from the run's start)."""

    id: int
    cls: str
    arrival: float
    outcome: str = UNFINISHED  # done | rejected | unfinished (run stopped, or client went away)
    start: float | None = None  # its batch started
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    largest_gap: float = 0.0  # seconds between two consecutive tokens, at most

    def token(self, t: float) -> None:
        """A token arrived at `t`."""
        if self.tokens == 0:
            self.first_token = t
        else:
            assert self.last_token is not None
            self.largest_gap = max(self.largest_gap, t - self.last_token)
        self.last_token, self.tokens = t, self.tokens + 1


@dataclass(frozen=True)
class Latency:
    """Percentiles in ms with the sample count; None when there are no samples."""

    p50: float | None
    p90: float | None
    p99: float | None
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(None, None, None, 0)
        p50, p90, p99 = (float(v) for v in np.percentile(np.asarray(seconds) * 1e3, [50, 90, 99]))
        return cls(p50, p90, p99, len(seconds))


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    slo_ms: float  # the e2e deadline, 0 where unset (every deadline is 0 for "overall")
    offered: int
    completed: int
    rejected: int
    unfinished: int
    met_slo: int
    attainment: float  # met_slo / offered (1.0 when nothing was offered)
    goodput_rps: float
    output_tokens: int
    queue: Latency
    ttft: Latency
    tpot: Latency
    e2e: Latency
    itl_max: Latency  # each request's largest inter-token latency
    ttft_slo_ms: float = 0.0
    itl_slo_ms: float = 0.0
    longest_reply: int = 0  # tokens of its longest completed request

    def bounded(self, deadline: str) -> Latency:
        """The figure a deadline (a `DEADLINES` key) bounds: e2e, TTFT or each request's longest wait."""
        return getattr(self, DEADLINE_STEMS[deadline])


@dataclass(frozen=True)
class ServingReport:
    """One open-loop run. `saturated` runs stopped early; their unfinished requests count as misses."""

    rate_rps: float  # target offered rate
    duration_s: float  # from the warm-up's end (the run's start without one) to its last token (or the stop)
    saturated: bool
    saturation_reason: str
    max_batch: int
    batches: int  # engine calls: batches, or with continuous batching decode steps
    mean_batch_rows: float
    occupancy: float  # mean rows per batch (per decode step) / max_batch
    output_tokens_per_s: float
    classes: tuple[ClassMetrics, ...]
    overall: ClassMetrics
    drain_s: float = 0.0  # from the last arrival to the last token: how long the backlog took to clear
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's notes (engine, policy, ...)
    busy_s: float = 0.0  # seconds the engine spent running batches, warm-up included
    warmup_s: float = 0.0  # requests sent before this were load, not judged
    warmup_offered: int = 0  # how many

    @property
    def utilization(self) -> float:
        """busy_s / the arrival window (see the module's definitions); 0 for a run without arrivals."""
        window = self.warmup_s + (self.overall.offered / self.rate_rps if self.rate_rps > 0 else 0.0)
        return self.busy_s / window if window > 0 else 0.0

    def by_class(self, name: str) -> ClassMetrics:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"class {name!r} not in this report; it has {', '.join(c.name for c in self.classes)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingReport:
        data = dict(data)
        data["classes"] = tuple(_class_from_dict(c) for c in data["classes"])
        data["overall"] = _class_from_dict(data["overall"])
        return cls(**data)


def _class_from_dict(data: dict[str, Any]) -> ClassMetrics:
    data = dict(data)
    data.setdefault("itl_max", asdict(Latency.of([])))  # reports written before it was measured
    for key in ("queue", "ttft", "tpot", "e2e", "itl_max"):
        data[key] = Latency(**data[key])
    return ClassMetrics(**data)


def summarize(
    records: Sequence[RequestRecord],
    classes: Sequence[ServingClassConfig],
    batch_rows: Sequence[int],
    *,
    max_batch: int,
    duration_s: float,
    rate_rps: float,
    saturated: bool = False,
    saturation_reason: str = "",
    extra: dict[str, Any] | None = None,
    drain_s: float = 0.0,
    busy_s: float = 0.0,
    warmup_s: float = 0.0,
    warmup_offered: int = 0,
) -> ServingReport:
    """Build the report from the judged requests' records and the row counts of the batches started after the
    warm-up (`warmup_offered` requests sent before `warmup_s`, whose records are not among `records`; their
    engine time is in `busy_s`)."""
    slo = {c.name: c for c in classes}
    per_class = tuple(_class_metrics(c, [r for r in records if r.cls == c.name], slo, duration_s) for c in classes)
    overall = _class_metrics(ServingClassConfig("overall", slo_ms=0.0), list(records), slo, duration_s)
    mean_rows = float(np.mean(batch_rows)) if batch_rows else 0.0
    return ServingReport(
        rate_rps=rate_rps,
        duration_s=duration_s,
        saturated=saturated,
        saturation_reason=saturation_reason,
        max_batch=max_batch,
        batches=len(batch_rows),
        mean_batch_rows=mean_rows,
        occupancy=mean_rows / max_batch,
        output_tokens_per_s=overall.output_tokens / duration_s if duration_s > 0 else 0.0,
        classes=per_class,
        overall=overall,
        drain_s=drain_s,
        extra=dict(extra or {}),
        busy_s=busy_s,
        warmup_s=warmup_s,
        warmup_offered=warmup_offered,
    )


def meets_slo(record: RequestRecord, cls: ServingClassConfig) -> bool:
    """Whether `record` completed within every deadline `cls` sets."""
    if record.outcome != DONE or record.last_token is None or record.first_token is None:
        return False
    return within_deadlines(cls, record.last_token - record.arrival, record.first_token - record.arrival,
                            record.largest_gap)


def within_deadlines(cls: ServingClassConfig, e2e_s: float, ttft_s: float, largest_gap_s: float | None) -> bool:
    """Whether a completed request's e2e, TTFT and longest wait between two tokens (seconds; None: fewer than two
    tokens, no stall) are within every deadline `cls` sets. The one rule the capacity search and the server's
    /metrics judge by."""
    within = [(cls.slo_ms, e2e_s), (cls.ttft_slo_ms, ttft_s), (cls.itl_slo_ms, largest_gap_s or 0.0)]
    return all(deadline <= 0 or seconds * 1e3 <= deadline for deadline, seconds in within)


def _class_metrics(
    cls: ServingClassConfig, records: list[RequestRecord], slo: dict[str, ServingClassConfig], duration_s: float
) -> ClassMetrics:
    done = [r for r in records if r.outcome == DONE]
    met = sum(meets_slo(r, slo[r.cls]) for r in records)
    return ClassMetrics(
        name=cls.name,
        slo_ms=cls.slo_ms,
        ttft_slo_ms=cls.ttft_slo_ms,
        itl_slo_ms=cls.itl_slo_ms,
        offered=len(records),
        completed=len(done),
        rejected=sum(r.outcome == REJECTED for r in records),
        unfinished=sum(r.outcome == UNFINISHED for r in records),
        met_slo=met,
        attainment=met / len(records) if records else 1.0,
        goodput_rps=met / duration_s if duration_s > 0 else 0.0,
        output_tokens=sum(r.tokens for r in records),
        queue=Latency.of([r.start - r.arrival for r in records if r.start is not None]),
        ttft=Latency.of([r.first_token - r.arrival for r in done if r.first_token is not None]),
        tpot=Latency.of([(r.last_token - r.first_token) / (r.tokens - 1) for r in done
                         if r.tokens > 1 and r.first_token is not None and r.last_token is not None]),
        e2e=Latency.of([r.last_token - r.arrival for r in done if r.last_token is not None]),
        itl_max=Latency.of([r.largest_gap for r in done if r.tokens > 1]),
        longest_reply=max((r.tokens for r in done), default=0),
    )
