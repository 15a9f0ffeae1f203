"""The capacity probe's traffic sent over HTTP to a running server and timed by the client: what a user of the served
bundle waits for, HTTP, JSON and the server's event loop included, which the in-process capacity search leaves out
(`autoopt.serve.loadtest` is its command).

Each request is one the capacity search offers at that rate (`autoopt.serving.runner.probe_arrivals`), sent open
loop at its scheduled time whatever the replies before it: streamed, its prompt as token ids, with `ignore_eos` so
that it runs to its output length as the search's rows do, and its class's priority as `priority` (autoopt's server
reads it; vLLM's when it schedules by priority, else leave it out). It is timed from its scheduled send time to its
token chunks (autoopt's server sends one per token under `ignore_eos`, an end-of-text token's empty): TTFT at the
first, the longest wait between two of them, e2e at the last; its tokens are the reply's `usage`. The probe is judged as
the in-process search judges its own (`autoopt.serving.capacity.violations`), with the engine busy seconds the
server's /metrics counts for its utilization (autoopt's server; elsewhere it is not known, and not judged), and
stops early as saturated by the runner's rule, the oldest request still without its first token standing in for the
oldest waiting one. A client on the server's machine takes CPU from it: the report says how late it sent requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from autoopt.config.schema import DecodingConfig
from autoopt.config.serving import ServingConfig
from autoopt.engines.sampling import workload_sampling
from autoopt.serving.capacity import System
from autoopt.serving.loadgen import Arrival
from autoopt.serving.metrics import DONE, REJECTED, UNFINISHED, RequestRecord, ServingReport, summarize
from autoopt.serving.runner import judged_seconds, probe_arrivals, saturation_lag_s

log = logging.getLogger("autoopt.serve.http_load")

CHECK_EVERY_S = 0.05  # how often the saturation check looks
SETTLE_TIMEOUT_S = 60.0  # how long the server may take to finish what a probe left it, before the next one
CONNECT_TIMEOUT_S = 10.0


class LoadTestError(RuntimeError):
    """The load could not be sent or read as asked (an unreachable server, a refused request): one line."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # the server's root, e.g. http://127.0.0.1:8000
    model: str | None = None  # sent as `model` where given
    priority: bool = True  # send each class's priority as `priority` (vLLM refuses it unless it schedules by it)


@dataclass(frozen=True)
class EngineCounts:
    """What an autoopt server's /metrics says of its engine: busy seconds, and rows per engine call; and of its
    process: CPU seconds (None where not exposed)."""

    busy_s: float
    batches: float
    rows: float
    cpu_s: float | None = None


async def engine_counts(client: httpx.AsyncClient) -> EngineCounts | None:
    """The server's engine counts, or None where its /metrics has none (another server)."""
    try:
        response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        samples = {s.name: s.value for family in text_string_to_metric_families(response.text)
                   for s in family.samples if not s.labels}
    except ValueError:  # not Prometheus text
        return None
    names = ("autoopt_engine_busy_seconds_total", "autoopt_batch_size_count", "autoopt_batch_size_sum")
    if not all(name in samples for name in names):
        return None
    return EngineCounts(*(samples[name] for name in names), cpu_s=samples.get("process_cpu_seconds_total"))


async def settle(client: httpx.AsyncClient, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the server runs no row and queues no request (where its /health says; autoopt's does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            health = (await client.get("/health")).json()
        except (httpx.HTTPError, ValueError):
            return
        if not isinstance(health, dict) or "active_rows" not in health:
            return
        busy = health["active_rows"] + sum(health.get("queue_depth", {}).values())
        if busy == 0:
            return
        if loop.time() > deadline:
            raise LoadTestError(f"the server still holds {busy} request(s) {timeout_s:g} s after the load ended")
        await asyncio.sleep(0.1)


def request_body(arrival: Arrival, priority: int | None, decoding: DecodingConfig | None,
                 model: str | None) -> dict[str, Any]:
    """The streamed completion request that sends `arrival` as the capacity search ran it (`priority` None: none)."""
    body: dict[str, Any] = {"prompt": arrival.prompt_ids.tolist(), "max_tokens": arrival.max_new_tokens,
                            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    if priority is not None:
        body["priority"] = priority
    if model is not None:
        body["model"] = model
    rows = workload_sampling(decoding, 1, arrival.id if arrival.draw is None else arrival.draw) if decoding else None
    if rows:
        s = rows[0]
        body.update(temperature=s.temperature, top_p=s.top_p, seed=s.seed, **({"top_k": s.top_k} if s.top_k else {}))
    return body


# What happened, by kind, for an httpx error that says nothing (a ReadError's text is often empty).
_KINDS: tuple[tuple[tuple[type[httpx.HTTPError], ...], str], ...] = (
    ((httpx.TimeoutException,), "the server did not answer in time"),
    ((httpx.ConnectError,), "the server refused the connection or cannot be reached (is it running?)"),
    ((httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError),
     "the server closed the connection (is it shutting down?)"),
)


def transport_error(e: httpx.HTTPError) -> str:
    """`e` in one line that says what happened: its kind, and its own text where it has one."""
    text = str(e).strip()
    if not text:
        text = next((what for kinds, what in _KINDS if isinstance(e, kinds)), "no detail given")
    return f"{type(e).__name__}: {text}"


async def _send(client: httpx.AsyncClient, body: dict[str, Any], record: RequestRecord, clock: _Clock) -> None:
    await asyncio.sleep(max(0.0, record.arrival - clock.now()))
    clock.lateness.append(clock.now() - record.arrival)
    usage: int | None = None
    finished = False
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code == 429:
                record.outcome = REJECTED
                return
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                raise LoadTestError(f"request {record.id} was answered {response.status_code}: {text[:300]}")
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                    if "error" in event:
                        raise LoadTestError(f"request {record.id} failed on the server: {event['error']}")
                    for choice in event.get("choices", []):
                        # a token's chunk (autoopt's server under ignore_eos sends one per token, vLLM's last one
                        # carries its finish_reason too)
                        if choice.get("finish_reason") is None or choice.get("text"):
                            record.token(clock.now())
                        if choice.get("finish_reason") is not None:
                            finished = True
                    if event.get("usage"):
                        usage = int(event["usage"]["completion_tokens"])
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    raise LoadTestError(f"request {record.id}: a reply this client cannot read ({type(e).__name__}: "
                                        f"{e}): {data[:200]}") from e
    except httpx.HTTPError as e:
        raise LoadTestError(f"request {record.id}: {transport_error(e)}") from e
    if finished:
        record.outcome = DONE
        record.tokens = record.tokens if usage is None else usage  # chunks carry text, usage counts tokens


class _Clock:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.lateness: list[float] = []  # how late the client sent each request, seconds

    def now(self) -> float:
        return self._loop.time() - self._t0


async def _watch(records: Sequence[RequestRecord], clock: _Clock, lag_bound: float, queue_bound: int) -> str:
    """Why the run is saturated, once it is (the runner's rule: `autoopt.serving.runner`)."""
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        now = clock.now()
        waiting = [r.arrival for r in records if r.arrival <= now and r.first_token is None and r.outcome == UNFINISHED]
        if waiting and now - min(waiting) > lag_bound:
            return f"oldest request without its first token lags {now - min(waiting):.2f}s > {lag_bound:.2f}s"
        if len(waiting) > queue_bound:
            return f"{len(waiting)} requests without their first token > {queue_bound}"


async def _probe(endpoint: Endpoint, cfg: ServingConfig, arrivals: Sequence[Arrival], rate_rps: float,
                 judged_from_s: float, decoding: DecodingConfig | None) -> ServingReport:
    priority = {c.name: c.priority if endpoint.priority else None for c in cfg.classes}
    records = [RequestRecord(a.id, a.cls, a.time_s) for a in arrivals]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # A wait between two chunks longer than the saturation bound is a server that stopped answering.
    timeout = httpx.Timeout(saturation_lag_s(cfg) + CONNECT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=endpoint.url, limits=limits, timeout=timeout) as client:
        await settle(client)
        before = await engine_counts(client)
        bodies = [request_body(a, priority[a.cls], decoding, endpoint.model) for a in arrivals]
        clock = _Clock()
        client_cpu = time.process_time()
        sends = [asyncio.create_task(_send(client, body, r, clock)) for body, r in zip(bodies, records, strict=True)]
        watch = asyncio.create_task(_watch(records, clock, saturation_lag_s(cfg), cfg.saturation_queue))
        every = asyncio.gather(*sends)
        try:
            await asyncio.wait({every, watch}, return_when=asyncio.FIRST_COMPLETED)
            if every.done():
                every.result()  # a request that failed fails the run
            reason = watch.result() if watch.done() else ""
        finally:
            for task in (*sends, watch):
                task.cancel()
            await asyncio.gather(every, *sends, watch, return_exceptions=True)  # each one over, each outcome read
        end = clock.now()
        client_cpu = time.process_time() - client_cpu
        await settle(client)
        after = await engine_counts(client)
    offered = [r for r in records if r.arrival <= end]
    judged = [r for r in offered if r.arrival >= judged_from_s]
    late = np.asarray(clock.lateness) * 1e3
    extra = {"client": "http", "url": endpoint.url, "sent": len(late),
             "send_lateness_ms_p99": float(np.percentile(late, 99)) if len(late) else None,
             "engine_counts": "the server's /metrics, the whole probe" if before and after else "not exposed",
             "client_cpu_s": client_cpu, "probe_s": end, "cpus_here": len(os.sched_getaffinity(0)),
             "server_cpu_s": (after.cpu_s - before.cpu_s if before and after and before.cpu_s is not None
                              and after.cpu_s is not None else None)}
    report = summarize(judged, cfg.classes, [], max_batch=cfg.max_batch, duration_s=max(0.0, end - judged_from_s),
                       rate_rps=rate_rps, saturated=bool(reason), saturation_reason=reason, extra=extra,
                       drain_s=end - max((r.arrival for r in offered), default=0.0),
                       busy_s=after.busy_s - before.busy_s if before and after else 0.0,
                       warmup_s=judged_from_s, warmup_offered=len(offered) - len(judged))
    if before and after and after.batches > before.batches:
        rows = (after.rows - before.rows) / (after.batches - before.batches)
        report = replace(report, batches=int(after.batches - before.batches), mean_batch_rows=rows,
                         occupancy=rows / cfg.max_batch)
    return report


def http_system(endpoint: Endpoint, cfg: ServingConfig, tokens: np.ndarray, prompt_lengths: list[int],
                output_lengths: list[int], decoding: DecodingConfig | None = None) -> System:
    """`rate -> report`: one probe over HTTP at that rate, with the requests the in-process search offers there."""
    probes = 0

    def system(rate_rps: float) -> ServingReport:
        nonlocal probes
        probes += 1
        log.info("probe %d: %.3g req/s for %g s (%g s of it warm-up, not judged)", probes, rate_rps,
                 cfg.warmup_s + judged_seconds(cfg, rate_rps), cfg.warmup_s)
        arrivals = probe_arrivals(cfg, tokens, prompt_lengths, output_lengths, rate_rps)
        return asyncio.run(_probe(endpoint, cfg, arrivals, rate_rps, cfg.warmup_s, decoding))

    return system
