"""The server's Prometheus metrics, in a registry of their own (GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from autoopt.config.serving import DEADLINES, ServingClassConfig
from autoopt.serve.reply import Reply
from autoopt.serving.metrics import within_deadlines

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, classes: list[ServingClassConfig]) -> None:
        self.registry = CollectorRegistry()
        r, cls = self.registry, ["cls"]
        self.e2e = Histogram("autoopt_request_e2e_seconds", "end-to-end latency per class: from the request "
                             "reaching the server (before its body is read) to its last token", cls,
                             registry=r, buckets=LATENCY_BUCKETS)
        self.ttft = Histogram("autoopt_request_ttft_seconds", "time to first token per class, from the request "
                              "reaching the server", cls, registry=r, buckets=LATENCY_BUCKETS)
        self.itl_max = Histogram("autoopt_request_itl_max_seconds", "each request's longest wait between two of its "
                                 "tokens (the stall a streaming client sees), per class", cls, registry=r,
                                 buckets=LATENCY_BUCKETS)
        self.queue = Histogram("autoopt_request_queue_seconds", "time from the request reaching the server to its "
                               "batch starting (continuous batching: its own prefill), per class", cls, registry=r,
                               buckets=LATENCY_BUCKETS)
        self.requests = Counter("autoopt_requests", "finished requests per class and outcome: ok, error (the engine "
                                "or the server failed), disconnected (the client left), shutdown (the server's "
                                "shutdown cancelled it unanswered)", ["cls", "outcome"], registry=r)
        self.slo = Counter("autoopt_requests_slo", "requests per class with a deadline, judged against its deadlines: "
                           "met (ok, within every one), missed (over one, or error, shutdown or refused with 429: no "
                           "answer in time); disconnected ones (the client left) are not judged. Attainment: met / "
                           "(met + missed)", ["cls", "verdict"], registry=r)
        self.rejections = Counter("autoopt_rejections", "requests refused with 429 per class", cls, registry=r)
        self.depth = Gauge("autoopt_queue_depth", "requests waiting per class", cls, registry=r)
        self.active = Gauge("autoopt_active_rows", "rows of the running batch still tracked", registry=r)
        self.batch = Histogram("autoopt_batch_size", "rows per engine call (continuous batching: per decode step)",
                               registry=r,
                               buckets=tuple(float(b) for b in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)))
        self.busy = Counter("autoopt_engine_busy_seconds", "seconds the engine spent running batches: its rate is "
                            "the utilization a capacity probe must keep at or below 1", registry=r)
        ProcessCollector(registry=r)  # process_cpu_seconds_total and memory: what serving costs the machine (Linux)
        self.judged = {c.name: c for c in classes if any(getattr(c, name) > 0 for name in DEADLINES)}
        for c in classes:
            for metric in (self.e2e, self.ttft, self.itl_max, self.queue, self.rejections, self.depth):
                metric.labels(c.name)
        for name in self.judged:
            for verdict in ("met", "missed"):
                self.slo.labels(name, verdict)

    def batch_done(self, rows: int, seconds: float) -> None:
        if rows:
            self.batch.observe(rows)
        self.busy.inc(seconds)

    def record(self, cls: str, reply: Reply, outcome: str) -> None:
        self.requests.labels(cls, outcome).inc()
        if reply.start is not None:
            self.queue.labels(cls).observe(reply.start - reply.arrival)
        end = reply.stopped_at if reply.stopped_at is not None else reply.last
        deadlines, met = self.judged.get(cls), False
        if outcome == "ok" and reply.first is not None and end is not None:
            ttft, e2e = reply.first - reply.arrival, end - reply.arrival
            self.ttft.labels(cls).observe(ttft)
            self.e2e.labels(cls).observe(e2e)
            gap = reply.largest_gap(end)
            if gap is not None:
                self.itl_max.labels(cls).observe(gap)
            met = deadlines is not None and within_deadlines(deadlines, e2e, ttft, gap)
        if deadlines is not None and outcome != "disconnected":
            self.slo.labels(cls, "met" if met else "missed").inc()

    def rejected(self, cls: str) -> None:
        """A request of class `cls` (or one choice of one) refused with 429: a miss where the class has deadlines, as
        the capacity search counts it."""
        self.rejections.labels(cls).inc()
        if cls in self.judged:
            self.slo.labels(cls, "missed").inc()
