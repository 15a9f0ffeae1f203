"""`python -m autoopt.serve` as a process, on an ort_genai bundle of the tiny model: stopped by SIGTERM or Ctrl-C
(SIGINT) while a reply streams, the reply completes, the process exits 0 with one line, and the bundle holds what
it held before (ort_genai stages a folder beside its model while loaded; SIGTERM's default action used to end the
process before the engine removed it). A max_length beyond the model's context fails at load, in one line."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoopt.bundle.write import export_bundle
from autoopt.config.schema import CandidateConfig
from tests.bundle.test_bundle import REPO, measure, tiny_prepared


@pytest.fixture(scope="module")
def genai_bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("signals")
    prep = tiny_prepared(tiny_model, tmp / "cache", engines=["ort_genai"], precisions=["fp32", "int4"])
    m = measure(prep, CandidateConfig(engine="ort_genai", quant="int4"))
    return export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, tmp / "bundle")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer /health")


@contextlib.contextmanager
def _streaming(bundle: Path) -> Iterator[tuple[subprocess.Popen[str], http.client.HTTPResponse]]:
    """A server of `bundle` and a long streamed reply it has started sending; the server is killed if still up."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoopt.serve", str(bundle), "--port", str(port), "--max-length", "640"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_healthy(port, proc)
        assert [p.name for p in bundle.glob(".model-run-*")]  # staged while it serves
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({"prompt": [5, 6, 7], "max_tokens": 600, "stream": True}),
                     {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.readline().startswith(b"data: ")  # the reply has started
        yield proc, reply
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_after_the_reply_in_flight_and_leaves_the_bundle_as_it_was(
    genai_bundle: Path, signum: int
) -> None:
    before = sorted(p.name for p in genai_bundle.rglob("*"))
    with _streaming(genai_bundle) as (proc, reply):
        proc.send_signal(signum)
        rest = reply.read().decode()
        _, err = proc.communicate(timeout=60)
    assert rest.rstrip().endswith("data: [DONE]")
    assert proc.returncode == 0, err
    assert f"stopped ({signal.Signals(signum).name}); no request was left unanswered" in err
    assert "Traceback" not in err and "measured one request at a time, not under load" in err
    assert sorted(p.name for p in genai_bundle.rglob("*")) == before


@pytest.mark.slow
def test_a_second_ctrl_c_stops_the_server_at_once_says_so_and_still_leaves_the_bundle_as_it_was(
    genai_bundle: Path,
) -> None:
    before = sorted(p.name for p in genai_bundle.rglob("*"))
    with _streaming(genai_bundle) as (proc, _):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "a second signal stopped the server without waiting for the requests in flight" in err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in genai_bundle.rglob("*")) == before


@pytest.mark.slow
def test_the_load_test_sends_the_bundles_measured_traffic_to_its_server_process(
    genai_bundle: Path, tmp_path: Path
) -> None:
    port, out = _free_port(), tmp_path / "reports.json"
    proc = subprocess.Popen([sys.executable, "-m", "autoopt.serve", str(genai_bundle), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(port, proc)
        load = subprocess.run([sys.executable, "-m", "autoopt.serve.loadtest", str(genai_bundle), "--url",
                               f"http://127.0.0.1:{port}", "--rate", "2", "--duration", "2", "--warmup", "0.5",
                               "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert load.returncode in (0, 1), load.stderr  # 1: it did not hold, which timing on a shared machine may bring
    assert "2 req/s over HTTP" in load.stdout and "Traceback" not in load.stderr
    (report,) = json.loads(out.read_text())
    overall = report["overall"]
    assert overall["offered"] == 4 and overall["offered"] == overall["completed"] + overall["rejected"] + overall[
        "unfinished"]
    assert report["saturated"] or overall["completed"] == 4


@pytest.mark.slow
def test_a_max_length_beyond_the_genai_models_context_fails_at_load_in_one_line(genai_bundle: Path) -> None:
    context = json.loads((genai_bundle / "model" / "genai_config.json").read_text())["model"]["context_length"]
    proc = subprocess.run([sys.executable, "-m", "autoopt.serve", str(genai_bundle), "--prompt", "hi",
                           "--max-length", str(context + 1)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: bundle {genai_bundle}: max_length {context + 1} exceeds the model's context length {context}; give a "
        f"max_length of {context} or less"]
