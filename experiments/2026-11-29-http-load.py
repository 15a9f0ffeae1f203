"""The same capacity probes in process (what the sweep measures) and over HTTP (what a client of
`python -m autoopt.serve` waits for), interleaved on one machine, for one bundle.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/2026-11-29-http-load.py BUNDLE [--rates 2 3 4] [--rounds 3]
        [--capacity] [--server-threads 2 1] [--switch-intervals 0.0005] [--out FILE]

This process and its servers run with the bundle's runtime environment (re-executed with it, as `python -m
autoopt.serve` is), so that no server re-executes itself and every way runs as the sweep measured. The bundle is
loaded here (in process) and served by a child `python -m autoopt.serve` process per entry of
--server-threads (its intra-op threads; default: the bundle's) and per entry of --switch-intervals (the server's
Python GIL switch interval, seconds; its default is 0.005), with the same batcher settings; while one runs a probe
the others are idle. Each round runs every rate every way, the order of the ways reversed every other round.
With --capacity each round also runs a whole capacity search every way. Prints one line per probe, with the CPU
seconds the server process and this (client) process used during an HTTP probe; --out writes every report as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from autoopt.bundle.layout import REFERENCE
from autoopt.bundle.load import load_bundle, runtime_env_missing
from autoopt.bundle.manifest import read_manifest, recorded_decoding
from autoopt.serve.__main__ import parse_args as serve_args
from autoopt.serve.__main__ import serving_config
from autoopt.serve.http_load import Endpoint, http_system
from autoopt.serving.capacity import find_capacity, violations
from autoopt.serving.metrics import DONE, REJECTED, RequestRecord, ServingReport, summarize
from autoopt.serving.runner import continuous, engine_system, make_scheduler, probe_arrivals
from autoopt.serving.scheduler import ServingRequest
from autoopt.serving.worker import ServingWorker

REPO = Path(__file__).resolve().parents[1]


def line(way: str, report: ServingReport, min_attainment: float) -> str:
    why = violations(report, min_attainment)
    cells = []
    for c in report.classes:
        if c.offered:
            cells.append(f"{c.name}: ttft {c.ttft.p99 or 0:.0f} stall {c.itl_max.p99 or 0:.0f} e2e {c.e2e.p99 or 0:.0f} "
                         f"ms att {c.attainment:.2f} (n {c.completed}/{c.offered})")
    verdict = "holds" if not why else "fails: " + "; ".join(why)
    o = report.overall
    overall = (f"all: tpot p50 {o.tpot.p50 or 0:.2f} ttft p50 {o.ttft.p50 or 0:.0f} e2e p50 {o.e2e.p50 or 0:.0f} "
               "ms")
    return (f"{way:<10} {report.rate_rps:6.3g} req/s  util {report.utilization:.2f}  {overall}  {' | '.join(cells)}  "
            f"-> {verdict}")


def timed(system, server_pid: int):  # noqa: ANN001, ANN201 - a script's wrapper
    """`system`, printing the CPU seconds the server process and this process used during each probe."""
    server, client = psutil.Process(server_pid), psutil.Process()

    def cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def probe(rate: float) -> ServingReport:
        s0, c0, w0 = cpu(server), cpu(client), time.perf_counter()
        report = system(rate)
        wall = time.perf_counter() - w0
        print(f"    cpu over {wall:.1f} s: server {cpu(server) - s0:.1f} s, client {cpu(client) - c0:.1f} s", flush=True)
        return report

    return probe


def worker_system(bundle, cfg, tokens, prompts, outputs):  # noqa: ANN001, ANN201 - a script's wrapper
    """`rate -> report`: the server's own worker thread (`autoopt.serving.worker`, the scheduler and continuous batch
    the server runs) fed the probe's requests from this thread at their scheduled times, no HTTP and no event loop:
    where the overhead is, between the runner's loop and the server. No saturation stop: fixed rates only."""

    def system(rate: float) -> ServingReport:
        arrivals = probe_arrivals(cfg, tokens, prompts, outputs, rate)
        records = {a.id: RequestRecord(a.id, a.cls, a.time_s) for a in arrivals}
        busy = [0.0]
        t0 = time.perf_counter()

        def clock() -> float:
            return time.perf_counter() - t0

        class Sink:
            def __init__(self, record: RequestRecord, wanted: int) -> None:
                self.record, self.wanted = record, wanted

            def started(self, t: float) -> None:
                self.record.start = t

            def token(self, index: int, token: int, t: float) -> bool:
                self.record.token(t)
                if self.record.tokens == self.wanted:
                    self.record.outcome = DONE
                return True

            def finished(self, error: BaseException | None) -> None:
                pass

        worker = ServingWorker(bundle.engine, make_scheduler(cfg, bundle.engine), clock=clock,
                               on_batch=lambda rows, s: busy.__setitem__(0, busy[0] + s),
                               prefill_chunk=cfg.prefill_chunk)
        worker.start()
        for a in arrivals:
            time.sleep(max(0.0, a.time_s - clock()))
            request = ServingRequest(a.id, a.cls, a.prompt_len, a.max_new_tokens, a.time_s, a.prompt_ids)
            if worker.submit(request, Sink(records[a.id], a.max_new_tokens)) == REJECTED:
                records[a.id].outcome = REJECTED
        worker.close(timeout=300)
        end = clock()
        judged = [r for r in records.values() if r.arrival >= cfg.warmup_s]
        return summarize(judged, cfg.classes, [], max_batch=cfg.max_batch, duration_s=end - cfg.warmup_s,
                         rate_rps=rate, drain_s=end - max(r.arrival for r in records.values()), busy_s=busy[0],
                         warmup_s=cfg.warmup_s, warmup_offered=len(records) - len(judged))

    return system


def in_thread(system):  # noqa: ANN001, ANN201 - a script's wrapper
    """`system` run on a thread of its own, as the server's worker runs the engine: the runner's loop unchanged."""

    def probe(rate: float) -> ServingReport:
        out: list[ServingReport] = []
        thread = threading.Thread(target=lambda: out.append(system(rate)))
        thread.start()
        thread.join()
        return out[0]

    return probe


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not answer /health within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rates", type=float, nargs="+", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capacity", action="store_true")
    parser.add_argument("--server-threads", type=int, nargs="+", default=[0])
    parser.add_argument("--worker", action="store_true", help="also the server's worker thread fed in process")
    parser.add_argument("--switch-intervals", type=float, nargs="+", default=[],
                        help="also a server per value, with Python's GIL switch interval set to it (seconds)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if missing := runtime_env_missing(read_manifest(args.bundle)):  # allocator settings are read at process start
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], {**os.environ, **missing})
    bundle = load_bundle(args.bundle)
    cfg = serving_config(serve_args([str(args.bundle)]), bundle)
    stream = continuous(cfg, bundle.engine)
    bundle.warm_up(cfg.max_batch, stream=stream, prefill_chunk=cfg.prefill_chunk)
    manifest = bundle.manifest
    tokens = np.load(args.bundle / REFERENCE)["stream"]
    prompts, outputs = list(manifest["workload"]["prompt_lengths"]), list(manifest["workload"]["output_lengths"])
    decoding = recorded_decoding(manifest["workload"])
    decoding = None if decoding.greedy else decoding
    ways = {"in-process": engine_system(bundle.engine, cfg, tokens, prompts, outputs, decoding)}
    if args.worker:
        ways["worker"] = worker_system(bundle, cfg, tokens, prompts, outputs)
        ways["in-thread"] = in_thread(ways["in-process"])
    print(f"{bundle.candidate.engine} {bundle.candidate.quant}, {cfg.batching} batching, max batch {cfg.max_batch}, "
          f"prefill chunk {cfg.prefill_chunk}, {bundle.runtime.threads} threads in process, probes of "
          f"{cfg.warmup_s:g} + {cfg.duration_s:g} s")
    servers = []
    reports: list[dict] = []
    try:
        variants = [(t, None) for t in args.server_threads] + [(0, si) for si in args.switch_intervals]
        for threads, switch in variants:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{s.getsockname()[1]}"
            extra = ["--threads", str(threads)] if threads else []
            start = ["-m", "autoopt.serve"] if switch is None else [
                "-c", f"import runpy, sys; sys.setswitchinterval({switch}); runpy.run_module('autoopt.serve', "
                "run_name='__main__')"]
            servers.append(subprocess.Popen([sys.executable, *start, str(args.bundle), "--port",
                                             url.rsplit(":", 1)[1], "--log-level", "warning", *extra], cwd=REPO,
                                            stderr=subprocess.DEVNULL))
            wait_healthy(url, servers[-1])
            name = f"http-t{threads or bundle.runtime.threads}" + ("" if switch is None else f"-si{switch * 1e3:g}ms")
            ways[name] = timed(http_system(Endpoint(url), cfg, tokens, prompts, outputs, decoding), servers[-1].pid)
        for k in range(args.rounds):
            order = list(ways) if k % 2 == 0 else list(reversed(ways))
            for rate in args.rates:
                for way in order:
                    report = ways[way](rate)
                    print(f"round {k + 1}  " + line(way, report, cfg.min_attainment), flush=True)
                    reports.append({"round": k + 1, "way": way, "report": report.to_dict()})
            if args.capacity:
                for way in (w for w in order if w not in ("worker", "in-thread")):
                    t0 = time.perf_counter()
                    found = find_capacity(ways[way], start_rps=manifest["metrics"]["serving.capacity_rps"]["value"],
                                          min_attainment=cfg.min_attainment, max_probes=8)
                    print(f"round {k + 1}  {way:<10} capacity {found.rate_rps:.3g} req/s "
                          f"({'converged' if found.converged else 'not converged'}, {len(found.probes)} probes, "
                          f"{time.perf_counter() - t0:.0f} s)", flush=True)
                    reports.append({"round": k + 1, "way": way, "capacity": found.to_dict()})
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=120)
        bundle.close()
        if args.out:
            args.out.write_text(json.dumps(reports, indent=1, default=str))


if __name__ == "__main__":
    main()
