"""`python -m autoopt.serve`: the serving settings it builds from a bundle's manifest and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig
from autoopt.config.serde import to_dict
from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.serve.__main__ import crowded_cpus, main, parse_args, serve_bundle, serving_config
from autoopt.serving.engine_thread import EngineThread
from tests.conftest import REPO


def bundle(manifest: dict[str, Any]) -> Any:
    runtime = RuntimeOptions(device="cpu", threads=1, batch_size=1, max_length=64, max_batch=8)
    candidate = CandidateConfig(serving_max_batch=4, serving_queue_delay_ms=5.0, serving_policy="weighted",
                                serving_mix_lengths=True)
    return SimpleNamespace(path=Path("b"), manifest=manifest, candidate=candidate, runtime=runtime)


def test_the_server_schedules_with_the_classes_and_starvation_bound_the_bundle_was_measured_with() -> None:
    measured = ServingConfig(classes=[ServingClassConfig("gold", 0, 300.0, 0.5, 8, "reject", 3.0),
                                      ServingClassConfig("bulk", 1, 0.0, 0.5, 16, "delay", 1.0)],
                             starvation_ms=500.0, starvation_every=2)
    manifest = {"resolved_config": {"workload": {"serving": to_dict(measured)}},
                "metrics": {"serving.capacity_rps": {"value": 12.0}}}

    cfg = serving_config(parse_args(["b"]), bundle(manifest))

    assert cfg.classes == measured.classes
    assert (cfg.starvation_ms, cfg.starvation_every) == (500.0, 2)
    assert (cfg.max_batch, cfg.max_queue_delay_ms, cfg.policy, cfg.mix_lengths) == (4, 5.0, "weighted", True)
    assert not serving_config(parse_args(["b", "--no-mix-lengths"]), bundle(manifest)).mix_lengths
    assert cfg.batching == "group"
    assert serving_config(parse_args(["b", "--batching", "continuous"]), bundle(manifest)).batching == "continuous"


def test_the_command_loads_warms_up_and_serves_the_bundle_on_one_thread_not_the_main_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import autoopt.serve.__main__ as cli
    import autoopt.serve.server

    threads: dict[str, int] = {}
    loaded = bundle({})
    loaded.engine = SimpleNamespace(name="torch", continuous=True, close=lambda: None)
    loaded.tokenizer, loaded.end_ids = None, frozenset()
    loaded.warm_up = lambda *args, **kwargs: threads.setdefault("warm_up", threading.get_ident()) and 0.0
    loaded.close = lambda: threads.setdefault("close", threading.get_ident())

    def load(*args: object, **kwargs: object) -> Any:
        threads["load"] = threading.get_ident()
        return loaded

    def serve(*args: object, engine_thread: EngineThread, **kwargs: object) -> None:
        threads["serve"] = engine_thread.ident

    monkeypatch.setattr(cli, "load_bundle", load)
    monkeypatch.setattr(autoopt.serve.server, "serve", serve)
    assert main(["b"]) == 0
    assert len(set(threads.values())) == 1 and threads["load"] != threading.get_ident()
    assert set(threads) == {"load", "warm_up", "serve", "close"}


def test_continuous_batching_on_an_engine_without_a_stream_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = bundle({})
    loaded.engine = SimpleNamespace(name="ort_genai", continuous=False)

    assert serve_bundle(loaded, parse_args(["b", "--batching", "continuous"]), EngineThread()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: serving batching=continuous: engine ort_genai as loaded has no continuous batching (torch "
                   "with a dynamic KV cache, torch_compiled and ort on cpu have); use batching=group"]


def test_the_prefill_chunk_is_the_bundles_unless_the_command_line_sets_it() -> None:
    loaded = bundle({})
    loaded.candidate = CandidateConfig(serving_batching="continuous", serving_prefill_chunk=32)
    assert serving_config(parse_args(["b"]), loaded).prefill_chunk == 32
    assert serving_config(parse_args(["b", "--prefill-chunk", "0"]), loaded).prefill_chunk == 0
    assert serving_config(parse_args(["b", "--batching", "group"]), loaded).prefill_chunk == 0  # not refused
    with pytest.raises(ConfigError, match="prefill_chunk=8 changes nothing with batching=group"):
        serving_config(parse_args(["b", "--prefill-chunk", "8"]), bundle({}))


def test_a_bundle_measured_one_request_at_a_time_serves_without_a_queue_delay() -> None:
    cfg = serving_config(parse_args(["b"]), bundle({}))
    assert (cfg.max_batch, cfg.max_queue_delay_ms) == (4, 0.0)
    assert serving_config(parse_args(["b", "--max-queue-delay-ms", "7"]), bundle({})).max_queue_delay_ms == 7.0


def test_a_manifest_without_serving_settings_serves_the_default_classes() -> None:
    cfg = serving_config(parse_args(["b", "--starvation-ms", "100"]), bundle({}))
    assert cfg.classes == ServingConfig().classes and cfg.starvation_ms == 100.0


@pytest.mark.parametrize("text", ["{not json", '{"files": {}}', "[]"])
def test_a_corrupt_manifest_fails_in_one_line_naming_the_bundle(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text(text)

    assert main([str(tmp_path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: bundle {tmp_path} cannot be loaded: ")
    assert f"python -m autoopt.bundle verify {tmp_path}" in err[0]


@pytest.mark.parametrize(("argv", "said"), [
    (["--port", "99999"], "argument --port: 99999 is not an integer in [0, 65535]"),
    (["--threads", "-2"], "argument --threads: -2 is not an integer in [1, ...]"),
    (["--prompt", "hi", "--max-new-tokens", "0"], "argument --max-new-tokens: 0 is not an integer in [1, ...]"),
    (["--max-length", "x"], "argument --max-length: invalid integer value: 'x'"),
    (["--max-batch", "0"], "argument --max-batch: 0 is not an integer in [1, ...]"),  # not the bundle's value
    (["--max-queue-delay-ms", "-5"], "argument --max-queue-delay-ms: -5 is not a number of milliseconds >= 0"),
    (["--max-queue-delay-ms", "nan"], "argument --max-queue-delay-ms: nan is not a number of milliseconds >= 0"),
    (["--starvation-ms", "0"], "argument --starvation-ms: 0 is not a number of milliseconds > 0"),
    (["--starvation-ms", "x"], "argument --starvation-ms: invalid number value: 'x'"),
])
def test_numbers_out_of_range_are_refused_before_anything_loads(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_args(["b", *argv])
    assert stop.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "named"), [
    (["--max-queue-delay-ms", "5"], "--max-queue-delay-ms"),
    (["--batching", "continuous", "--port", "8000", "--max-batch", "2"], "--max-batch, --batching"),
    (["--no-mix-lengths"], "--[no-]mix-lengths"),
])
def test_serving_flags_with_prompt_are_refused_in_one_line_as_doing_nothing(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_args(["b", "--prompt", "hi", *argv])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and err.endswith(f"error: {named}: serving flags do nothing with --prompt (it "
                                                 "completes one prompt and serves nothing); leave them out, or "
                                                 "leave out --prompt to serve")


def test_the_listening_address_passes_with_prompt_as_the_docker_images_give_it() -> None:
    args = parse_args(["b", "--host", "0.0.0.0", "--port", "8000", "--log-level", "info", "--prompt", "hi"])
    assert args.prompt == "hi"


WARMING_FOREVER = """
import sys
from types import SimpleNamespace

import torch

import autoopt.serve.__main__ as cli
from tests.serve.test_cli import bundle

loaded = bundle({})
loaded.engine = SimpleNamespace(name="torch", continuous=True)


def warm_up(*args, **kwargs):
    a = torch.randn(256, 256)
    print("warming", flush=True)
    while True:
        a @ a


loaded.warm_up, loaded.close = warm_up, lambda: None
cli.load_bundle = lambda *args, **kwargs: loaded
sys.exit(cli.main(["b"]))
"""


def test_a_signal_during_the_warm_up_ends_the_command_in_one_line_not_an_abort(tmp_path: Path) -> None:
    """The warm-up runs on the engine thread, in torch; the process must not tear torch down under it."""
    script = tmp_path / "warming.py"
    script.write_text(WARMING_FOREVER)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "warming"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "stopped (SIGTERM); no request was left unanswered"



def test_engine_threads_taking_every_cpu_are_named_at_start_with_one_fewer_to_compare() -> None:
    cpus = len(os.sched_getaffinity(0))

    note = crowded_cpus(cpus)

    if cpus < 2:
        assert note == ""  # one CPU: nothing fewer to try
    else:
        assert f"{cpus} intra-op threads take every CPU" in note and f"--threads {cpus - 1}" in note
        assert crowded_cpus(cpus - 1) == ""
