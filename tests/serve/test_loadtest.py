"""The capacity probe's traffic over HTTP (`autoopt.serve.http_load`, `python -m autoopt.serve.loadtest`): against the
real server of the tiny untrained model on loopback. Timing is never asserted, only what the client counted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from autoopt.bundle.layout import MANIFEST, REFERENCE
from autoopt.config.schema import DecodingConfig
from autoopt.config.serde import to_dict
from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.serve.app import ServedModel, create_app
from autoopt.serve.http_load import Endpoint, LoadTestError, http_system, request_body, transport_error
from autoopt.serve.loadtest import main
from autoopt.serve.server import ServerThread
from autoopt.serving.loadgen import Arrival
from autoopt.serving.runner import probe_arrivals
from tests.serve.helpers import PacedEngine, wait_until

PROMPTS, OUTPUTS = [6, 12], [3, 5]
CLASSES = [ServingClassConfig("P0", 0, 5000.0, 0.5, 32, "reject"), ServingClassConfig("P3", 3, 0.0, 0.5, 64, "delay")]
LOAD = ServingConfig(classes=CLASSES, max_batch=4, max_queue_delay_ms=2.0, duration_s=1.2, warmup_s=0.4, seed=3)


def _tokens(served: ServedModel) -> np.ndarray:
    return np.arange(500, dtype=np.int64) % served.tokenizer.get_vocab_size()


def _counted(url: str, outcome: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("autoopt_requests_total{") and f'outcome="{outcome}"' in line)


def test_a_probe_over_http_sends_the_search_s_requests_and_times_each_to_its_output_length(served: ServedModel) -> None:
    rate = 6.0
    arrivals = probe_arrivals(LOAD, _tokens(served), PROMPTS, OUTPUTS, rate)
    # Every token ends a reply here but for ignore_eos, which the search's requests run to their length with.
    ends = frozenset(range(served.tokenizer.get_vocab_size()))
    model = ServedModel(served.engine, served.tokenizer, "tiny", served.max_length, ends)
    with ServerThread(create_app(model, replace(LOAD, batching="continuous"))) as server:
        ok_before = _counted(server.url, "ok")
        report = http_system(Endpoint(server.url), LOAD, _tokens(served), PROMPTS, OUTPUTS)(rate)
        ok_after = _counted(server.url, "ok")
    judged = [a for a in arrivals if a.time_s >= LOAD.warmup_s]
    assert not report.saturated and report.overall.offered == len(judged) == round(rate * LOAD.duration_s)
    assert report.warmup_offered == len(arrivals) - len(judged)
    assert report.overall.completed == len(judged) and report.overall.rejected == 0
    assert report.overall.output_tokens == sum(a.max_new_tokens for a in judged)  # ignore_eos: each ran its length
    assert ok_after - ok_before == len(arrivals)  # the server served the warm-up's too
    assert report.overall.ttft.p99 <= report.overall.e2e.p99 and report.overall.queue.n == 0  # queue: not seen
    assert report.busy_s > 0 and report.batches > 0 and 1 <= report.mean_batch_rows <= LOAD.max_batch
    assert report.extra["sent"] == len(arrivals) and report.extra["send_lateness_ms_p99"] >= 0
    # here the server runs in the client's process: its CPU, from /metrics, holds the client's
    assert report.extra["server_cpu_s"] > report.extra["client_cpu_s"] - 0.05 and report.extra["client_cpu_s"] > 0


def test_the_request_body_carries_the_class_priority_and_the_search_s_seed() -> None:
    arrival = Arrival(7, 0.5, "P0", np.array([5, 6, 7]), 4, draw=11)
    greedy = request_body(arrival, 0, None, None)
    assert greedy["prompt"] == [5, 6, 7] and greedy["max_tokens"] == 4 and greedy["ignore_eos"] is True
    assert greedy["priority"] == 0 and greedy["stream"] is True
    assert "temperature" not in greedy and "model" not in greedy
    sampled = request_body(arrival, 3, DecodingConfig(temperature=0.7, top_p=0.9, top_k=20, seed=100), "m")
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"]) == (0.7, 0.9, 20, 111)
    assert sampled["model"] == "m" and sampled["priority"] == 3
    assert request_body(replace(arrival, draw=None), 0, DecodingConfig(temperature=1.0, seed=100), None)["seed"] == 107


def test_a_load_the_server_cannot_keep_up_with_stops_as_saturated_and_leaves_it_idle(served: ServedModel) -> None:
    engine = PacedEngine(served.engine, 0.05)
    model = ServedModel(engine, served.tokenizer, "tiny", served.max_length)
    server_cfg = ServingConfig(classes=CLASSES, max_batch=1, max_queue_delay_ms=0.0)
    load = replace(LOAD, classes=[replace(CLASSES[0], slo_ms=50.0), CLASSES[1]], saturation_lag_factor=4.0,
                   duration_s=4.0, warmup_s=0.0)  # the lag bound: 4 x 50 ms
    with ServerThread(create_app(model, server_cfg)) as running:
        report = http_system(Endpoint(running.url), load, _tokens(served), PROMPTS, OUTPUTS)(40.0)
        health = httpx.get(running.url + "/health", timeout=5).json()
    assert report.saturated and "without its first token" in report.saturation_reason
    assert report.overall.offered < 40.0 * load.duration_s and report.overall.unfinished > 0
    assert health["active_rows"] == 0 and sum(health["queue_depth"].values()) == 0


def test_a_refused_request_counts_as_rejected_and_a_refused_body_fails_the_run(served: ServedModel) -> None:
    engine = PacedEngine(served.engine, 0.03)
    model = ServedModel(engine, served.tokenizer, "tiny", served.max_length)
    tight = [replace(CLASSES[0], queue_limit=1), CLASSES[1]]
    with ServerThread(create_app(model, ServingConfig(classes=tight, max_batch=1, max_queue_delay_ms=0.0))) as running:
        load = replace(LOAD, classes=tight, warmup_s=0.0, duration_s=1.0)
        report = http_system(Endpoint(running.url), load, _tokens(served), PROMPTS, OUTPUTS)(30.0)
        assert report.by_class("P0").rejected > 0 and report.by_class("P0").attainment < 1.0
        wait_until(lambda: httpx.get(running.url + "/health", timeout=5).json()["active_rows"] == 0, 30)
        with pytest.raises(LoadTestError, match="answered 400"):
            http_system(Endpoint(running.url), load, _tokens(served), [served.max_length], OUTPUTS)(2.0)


def test_an_unreachable_server_fails_the_run_in_one_line(served: ServedModel) -> None:
    with ServerThread(create_app(served, ServingConfig(max_batch=1))) as running:
        url = running.url
    with pytest.raises(LoadTestError, match="ConnectError"):
        http_system(Endpoint(url), replace(LOAD, warmup_s=0.0), _tokens(served), PROMPTS, OUTPUTS)(4.0)


def _bundle(tmp_path: Path, served: ServedModel, capacity: float | None) -> Path:
    """What the command reads of a bundle: its manifest's workload, candidate and figures, and its held-out text."""
    (tmp_path / REFERENCE).parent.mkdir(parents=True)
    np.savez(tmp_path / REFERENCE, stream=_tokens(served))
    metrics: dict[str, Any] = {}
    if capacity is not None:
        metrics["serving.capacity_rps"] = {"value": capacity}
        metrics.update({f"serving.classes.P0.{k}": {"value": v} for k, v in
                        {"e2e_p99_ms": 12.0, "attainment": 1.0, "offered": 5, "completed": 5}.items()})
    manifest = {"workload": {"prompt_lengths": PROMPTS, "output_lengths": OUTPUTS},
                "candidate": {"serving_max_batch": 4}, "metrics": metrics,
                "resolved_config": {"workload": {"serving": to_dict(LOAD)}}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_the_command_sends_the_manifest_s_capacity_and_prints_the_manifest_beside(
    served: ServedModel, server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports.json"
    assert main([str(_bundle(tmp_path, served, 5.0)), "--url", server.url, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "holds at 5 req/s over HTTP" in printed and "P0 manifest" in printed and "12.0 ms" in printed
    assert "CPU over the probe's" in printed and "s (its /metrics), this client" in printed
    (report,) = json.loads(out.read_text())
    assert report["rate_rps"] == 5.0 and report["overall"]["offered"] == round(5.0 * LOAD.duration_s)


def test_a_json_path_that_cannot_be_written_is_refused_before_any_probe(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as refused:
        main([str(tmp_path), "--json", str(tmp_path / "missing" / "r.json")])
    assert refused.value.code == 2


def test_the_command_needs_a_rate_where_the_manifest_records_no_capacity(
    served: ServedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(_bundle(tmp_path, served, None)), "--url", "http://127.0.0.1:9"]) == 2
    assert "records no capacity" in capsys.readouterr().err


@pytest.mark.parametrize(("error", "says"), [
    (httpx.ReadError(""), "ReadError: the server closed the connection (is it shutting down?)"),
    (httpx.RemoteProtocolError(""), "RemoteProtocolError: the server closed the connection (is it shutting down?)"),
    (httpx.ConnectError(""), "ConnectError: the server refused the connection or cannot be reached (is it running?)"),
    (httpx.ReadTimeout(""), "ReadTimeout: the server did not answer in time"),
    (httpx.DecodingError(""), "DecodingError: no detail given"),
    (httpx.ReadError("[Errno 104] Connection reset by peer"), "ReadError: [Errno 104] Connection reset by peer"),
])
def test_a_transport_error_says_what_happened_even_where_httpx_says_nothing(error: httpx.HTTPError, says: str) -> None:
    assert transport_error(error) == says
