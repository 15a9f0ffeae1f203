from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest

from autoopt.bundle import load_bundle
from autoopt.bundle.__main__ import main as bundle_main
from autoopt.bundle.__main__ import report
from autoopt.bundle.manifest import check_hashes, sha256_file, write_manifest
from autoopt.bundle.verify import Check, Verification, effective_tolerances, format_checks, minimum_tolerances, within
from autoopt.bundle.write import destination_problem, export_bundle, install_markdown, manifest_payload, readme
from autoopt.config.errors import ConfigError
from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.launch import InProcessLauncher
from autoopt.jobs.prepare import Prepared, prepare
from autoopt.result import DEFINITIONS, MeasureResult

REPO = Path(__file__).resolve().parents[2]
SEARCH_MACHINERY = ("optuna", "mlflow", "hydra", "omegaconf")


@dataclass(frozen=True)
class Measured:
    result: MeasureResult
    artifact: Path
    reference: Path
    workload: dict
    resolved_config: dict


def measure(prep: Prepared, candidate: CandidateConfig) -> Measured:
    """Build and measure through the same jobs a sweep runs, in this process."""
    launcher = InProcessLauncher()
    result = launcher.launch(prep.measure_job(candidate, launcher.launch(prep.build_job(candidate))))
    resolved = {"target": asdict(prep.target), "workload": asdict(prep.workload), "candidate": asdict(candidate)}
    return Measured(result, Path(result.build.artifact), prep.reference.path, asdict(prep.workload), resolved)


def tiny_prepared(tiny_model: Path, cache: Path, **target: object) -> Prepared:
    workload = WorkloadConfig(
        name="smoke", prompt_lengths=[16], output_lengths=[4], eval_windows=2, eval_window_len=32
    )
    settings = {"name": "test-cpu", "memory_gb": 4.0, "cores": 1, "price_per_hour": 0.1, "price_source": "test"}
    bench = BenchConfig(warmup_runs=1, min_runs=3, min_seconds=0.2)
    model = ModelConfig(name="tiny", kind="hf", path=str(tiny_model))
    return prepare(model, TargetConfig(**{**settings, **target}), workload, bench, cache)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def prep(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return tiny_prepared(tiny_model, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def measured(prep: Prepared) -> Measured:
    """A real measurement of the torch candidate on the tiny model, whose artifact is the model folder."""
    return measure(prep, CandidateConfig())


@pytest.fixture(scope="module")
def bundle(measured: Measured, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle"
    m = measured
    return export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, out)


@pytest.fixture
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_manifest_hashes_every_file_and_defines_every_metric(bundle: Path, measured: Measured) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())

    files = manifest["files"]
    model_files = {
        p.relative_to(measured.artifact).as_posix() for p in measured.artifact.rglob("*") if p.is_file()
    }
    # the artifact's files, plus the runtime's own config file with the measured settings
    assert {rel.removeprefix("model/") for rel in files if rel.startswith("model/")} == model_files | {
        "torch_runtime.json"
    }
    assert {"verify/reference.npz", "README.md", "model/tokenizer.json"} <= files.keys()
    assert all(files[rel] == sha256_file(bundle / rel) for rel in files)
    assert check_hashes(bundle) == []
    metrics = manifest["metrics"]
    assert metrics["speed.e2e_ms.p90"]["value"] == measured.result.speed.e2e_ms.p90
    assert (
        metrics["speed.e2e_ms.p90"]["unit"] == "ms"
        and "90th percentile" in metrics["speed.e2e_ms.p90"]["definition"]
    )
    assert all(entry["definition"] for entry in metrics.values())
    assert not [figure for figure, entry in metrics.items() if not entry["unit"]]
    assert metrics["speed.seconds"]["unit"] == "s" and metrics["memory.device_peak_mb"]["value"] is None
    for shape in measured.result.speed.shapes:  # each request shape's figures, keyed by the shape
        key = f"speed.shapes.p{shape.prompt_len}_o{shape.output_len}_b{shape.batch}"
        assert metrics[f"{key}.e2e_ms.p90"]["value"] == shape.e2e_ms.p90
        assert metrics[f"{key}.ttft_ms.n"]["value"] == shape.ttft_ms.n and metrics[f"{key}.tpot_ms.p50"]["unit"] == "ms"
        assert (f"{shape.prompt_len} prompt tokens, {shape.output_len} new tokens, batch {shape.batch}"
                in metrics[f"{key}.e2e_ms.p90"]["definition"])
    assert measured.result.speed.shapes  # the loop above checked something
    assert manifest["runtime"] == asdict(measured.result.runtime)
    assert manifest["runtime"] == {"device": "cpu", "threads": 1, "batch_size": 1, "max_length": 96, "max_batch": 4}
    assert manifest["target"]["device"] == "cpu" and manifest["engine"] == "torch"


def test_readme_states_headline_numbers_with_their_meaning(bundle: Path) -> None:
    readme = (bundle / "README.md").read_text()

    assert "p50" in readme and "p90" in readme and "batch 1" in readme and "warm" in readme
    assert "python -m autoopt.serve" in readme and "python -m autoopt.bundle verify" in readme
    assert "## Run it with torch alone" in readme and "MALLOC_TRIM_THRESHOLD_=4294967296" in readme
    assert "configured for at most 96 tokens of prompt plus completion" in readme
    assert "OMP_NUM_THREADS=1 python run.py" in readme  # the measurement's environment, threads included
    workload = json.loads((bundle / "manifest.json").read_text())["workload"]
    shape = f"{workload['prompt_lengths'][0]}-token prompt, {workload['output_lengths'][0]} new tokens, batch 1"
    assert f"first request ({shape}) after the warm-up" in readme  # the cold start's shape
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
    for p in workload["prompt_lengths"]:  # one row per request shape, with its own figures
        for o in workload["output_lengths"]:
            key = f"speed.shapes.p{p}_o{o}_b1"
            row = (f"| {p} | {o} | 1 | {metrics[f'{key}.ttft_ms.p50']['value']:.1f} | "
                   f"{metrics[f'{key}.tpot_ms.p50']['value']:.2f} | {metrics[f'{key}.e2e_ms.p50']['value']:.1f} | ")
            assert row in readme


@pytest.mark.parametrize(("warm", "said"), [(True, "read from inductor's on-disk cache"), (False, "compiled")])
def test_manifest_and_readme_say_whether_the_compile_time_was_a_cache_read(
    measured: Measured, warm: bool, said: str
) -> None:
    speed = replace(measured.result.speed, compile_s=2.0, compile_cache_warm=warm)
    payload = manifest_payload(replace(measured.result, speed=speed), measured.workload, {})

    assert payload["metrics"]["speed.compile_cache_warm"]["value"] == int(warm)
    assert "as recorded" not in payload["metrics"]["build.cached"]["definition"]
    assert f"of which 2.0 s on its compiled graphs ({said})" in readme(payload)


def test_readme_of_a_candidate_measured_under_load_states_its_capacity_and_each_class(measured: Measured) -> None:
    from autoopt.result import ServingClassResult, ServingResult

    classes = {"P0": ServingClassResult(200.0, 120.0, 20.0, 5.0, 1.0, 2.0, 0, 30, 30, itl_max_p99_ms=14.0),
               "P3": ServingClassResult(0.0, None, None, None, 1.0, 0.0, 0, 0, 0)}
    serving = ServingResult(12.5, True, 7, 4, 0.6, 40.0, 4, 9.6, 0.05, classes, warmup_s=2.0, judged_s=6.0)
    payload = manifest_payload(replace(measured.result, serving=serving), measured.workload, {})
    text = readme(payload)
    figures = payload["metrics"]

    assert figures["serving.capacity_rps"]["value"] == 12.5 and figures["serving.capacity_rps"]["unit"] == "requests/s"
    assert figures["serving.classes.P0.e2e_p99_ms"] == {
        "value": 120.0, "unit": "ms", "definition": f"e2e_p99_ms of class P0: {DEFINITIONS['serving.classes']}"}
    assert figures["roofline.efficiency"]["value"] == measured.result.roofline.efficiency
    said = {f: m["definition"] for f, m in figures.items() if f.split(".")[0] in ("serving", "roofline")}
    assert not [f for f, d in said.items() if "as recorded" in d]
    assert not [f for f, m in figures.items() if not m["unit"]]

    assert "strict priority; each probe 2 s of warm-up traffic, then 6 s judged): capacity 12.50 requests/s, the " \
        "highest offered rate at which every class kept its SLO, with prompts of the workload's lengths (a batch " \
        "holds prompts of one length: more varied lengths fill fewer rows)" in text  # not recorded: measured so
    mixed = readme(manifest_payload(replace(measured.result, serving=replace(serving, mixed_lengths=True)),
                                    measured.workload, {}))
    assert "with prompts of the workload's lengths (a batch takes its lead's prompt length, then may fill free " \
        "rows with shorter prompts, padded)" in mixed
    streamed = manifest_payload(replace(measured.result, serving=replace(serving, continuous=True)), measured.workload, {})
    assert streamed["metrics"]["serving.continuous"]["value"] == 1
    assert "under open-loop load (a continuous batch of up to 4 rows, strict priority;" in readme(streamed)
    assert "under open-loop load (dynamic batches of up to 4 rows, queue delay " in text
    assert "(requests of any length join the running batch between decode steps and leave it at their last " \
        "token)" in readme(streamed)
    chunked = replace(measured.result.candidate, serving_batching="continuous", serving_prefill_chunk=32)
    parted = replace(measured.result, serving=replace(serving, continuous=True), candidate=chunked)
    assert "leave it at their last token, their prompts prefilled at most 32 tokens before each decode step)" in readme(
        manifest_payload(parted, measured.workload, {}))
    assert "  - P0 (SLO 200 ms e2e): e2e p99 120 ms over 30 of 30 requests, attainment 1.000, longest wait between " \
        "two tokens p99 14 ms" in text
    streaming = {"P0": replace(classes["P0"], slo_ms=0.0, ttft_slo_ms=50.0, itl_slo_ms=30.0)}
    deadlines = manifest_payload(replace(measured.result, serving=replace(serving, classes=streaming)),
                                 measured.workload, {})
    assert deadlines["metrics"]["serving.classes.P0.ttft_slo_ms"]["value"] == 50.0
    assert "  - P0 (SLO 50 ms to the first token, 30 ms between two tokens): e2e p99 120 ms, TTFT p99 20 ms over 30 " \
        "of 30 requests, attainment 1.000, longest wait between two tokens p99 14 ms" in readme(deadlines)
    assert figures["serving.classes.P0.itl_max_p99_ms"]["unit"] == "ms"
    assert "  - P3 (best effort): not offered at that rate" in text
    assert "a peak of 40.0 requests/s needs 4 replica(s): $9.60 per day" in text
    assert "under open-loop load" not in readme(manifest_payload(measured.result, measured.workload, {}))
    unbracketed = replace(serving, converged=False)
    text = readme(manifest_payload(replace(measured.result, serving=unbracketed), measured.workload, {}))
    assert "capacity 12.50 requests/s (a lower bound: the probes ran out before bracketing it within 5 %)" in text
    none_held = replace(serving, capacity_rps=0.0, replicas=None, usd_per_day=None, usd_per_1m_output_tokens_at_peak=None)
    text = readme(manifest_payload(replace(measured.result, serving=none_held), measured.workload, {}))
    assert "no offered rate held every class's SLO" in text and "capacity 0.00" not in text


def test_readme_puts_only_the_install_command_in_a_code_span(measured: Measured) -> None:
    candidate = replace(measured.result.candidate, engine="ort_genai", quant="int4")
    text = readme(manifest_payload(replace(measured.result, candidate=candidate), measured.workload, {}))

    assert "`onnxruntime_genai`: `pip install -e '.[cpu]'` in autoopt's source folder." in text
    assert install_markdown("pip install -e . in autoopt's source folder") == (
        "`pip install -e .` in autoopt's source folder")
    hint = "a CUDA build of torch (pytorch.org/get-started)"
    assert install_markdown(hint) == hint  # prose, no command to quote


def test_readme_does_not_claim_the_runtime_alone_runs_a_snippet_that_imports_autoopt(measured: Measured) -> None:
    candidate = replace(measured.result.candidate, engine="torch_compiled", quant="int8_weight")
    text = readme(manifest_payload(replace(measured.result, candidate=candidate), measured.workload, {}))

    assert "from autoopt.engines.torch_compiled" in text
    assert "alone" not in text and "## Run it with torch and autoopt's engine code" in text


def test_export_replaces_an_existing_bundle(measured: Measured, bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / "stale.txt").write_text("from an earlier export")
    m = measured

    export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, bundle_copy)

    assert not (bundle_copy / "stale.txt").exists()
    assert check_hashes(bundle_copy) == []
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_export_refuses_a_folder_of_other_files_and_leaves_it_intact(measured: Measured, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "todo.txt").write_text("keep me")
    m = measured

    with pytest.raises(ConfigError, match=r"mine holds files but no manifest\.json") as e:
        export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, out)

    assert "\n" not in str(e.value)
    assert (out / "notes" / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("empty", [True, False], ids=["empty", "missing"])
def test_export_writes_into_an_empty_or_missing_folder(measured: Measured, tmp_path: Path, empty: bool) -> None:
    out = tmp_path / "out" / "bundle"
    if empty:
        out.mkdir(parents=True)
    m = measured

    export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, out)

    assert check_hashes(out) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bundle"]


def test_a_file_is_no_destination_for_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    assert destination_problem(tmp_path / "file", "export.dir=file") == (
        "export.dir=file is not a folder; give a new or empty folder, or an earlier bundle's"
    )


def test_loaded_bundle_completes_a_prompt(bundle: Path) -> None:
    with load_bundle(bundle, threads=1) as loaded:
        text = loaded.generate_text("def ", max_new_tokens=4)

        assert isinstance(text, str)
        assert loaded.candidate == CandidateConfig()
        assert loaded.runtime.threads == 1


def test_a_loaded_bundle_warms_up_every_measured_prompt_length_at_each_batch_size(bundle: Path) -> None:
    with load_bundle(bundle, threads=1) as loaded:
        calls: list[tuple[int, ...]] = []
        sampled: list[tuple[int, ...]] = []
        generate = loaded.engine.generate

        def counted(ids, n: int, sampling: list | None = None):  # type: ignore[no-untyped-def]
            (calls if sampling is None else sampled).append(ids.shape)
            return generate(ids, n) if sampling is None else generate(ids, n, sampling=sampling)

        loaded.engine.generate = counted  # type: ignore[method-assign]
        assert loaded.warm_up(max_batch=2) > 0
    lengths = loaded.manifest["workload"]["prompt_lengths"]
    assert sorted(calls) == sorted((rows, p) for p in lengths for rows in (1, 2))
    assert sampled == ([(1, min(lengths))] if loaded.engine.samples else [])  # the path a sampling request takes


def test_a_max_length_beyond_the_models_context_is_refused_at_load_in_one_line(bundle: Path) -> None:
    context = json.loads((bundle / "model" / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(ConfigError, match=f"max_length {context + 1} exceeds the model's context length {context}; "):
        load_bundle(bundle, max_length=context + 1)


def test_prompt_longer_than_max_length_is_refused_with_the_fix(bundle: Path) -> None:
    with load_bundle(bundle) as loaded, pytest.raises(ValueError, match="max_length"):
        loaded.generate_text("def " * 200, max_new_tokens=4)


def test_a_bundle_whose_runtime_is_not_installed_fails_to_load_in_one_line_with_the_fix(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))

    # A RuntimeError is what `serve` and `verify` print as one line; an ImportError would be a traceback.
    with pytest.raises(RuntimeError, match=r"engine=torch on cpu needs the python package 'torch': pip install"):
        load_bundle(bundle)


def test_a_bundle_without_its_tokenizer_fails_to_load_naming_it(bundle_copy: Path) -> None:
    (bundle_copy / "model" / "tokenizer.json").unlink()

    # FileNotFoundError is what `serve` prints as one line; tokenizers raised a bare Exception naming no path.
    with pytest.raises(FileNotFoundError, match="has no model/tokenizer.json"):
        load_bundle(bundle_copy)


def test_verify_accepts_a_fresh_bundle(
    bundle: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code = bundle_main(["verify", str(bundle)])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "accuracy.top1_agreement" in out and "speed.e2e_ms.p50" in out and "OK" in out
    assert "accuracy.decode_self_agreement" in out  # recorded by this version, so checked
    assert "manifest.json is not pinned" in caplog.text and "--manifest-sha256" in caplog.text


def test_verify_names_a_model_file_with_one_flipped_byte(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = bundle_copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    code = bundle_main(["verify", str(bundle_copy)])

    out = capsys.readouterr().out
    assert code == 1
    assert "model/model.safetensors" in out
    assert "fails verification before any measurement:" in out and "tolerance" not in out  # nothing measured


def _reexport_manifest(bundle: Path, edit) -> None:
    """Rewrite the manifest as an exporter would have written it with `edit` applied: hashes stay valid."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in ("files", "manifest_version", "manifest_sha256"):
        del manifest[key]
    edit(manifest)
    write_manifest(bundle, manifest)


def test_verify_fails_when_accuracy_drifts_from_the_manifest(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def drift(manifest: dict) -> None:
        manifest["metrics"]["accuracy.top1_agreement"]["value"] -= 0.01

    _reexport_manifest(bundle_copy, drift)

    code = bundle_main(["verify", str(bundle_copy)])

    out = capsys.readouterr().out
    assert code == 1
    assert any(
        line.startswith("accuracy.top1_agreement") and line.endswith("NO") for line in out.splitlines()
    )


def test_verify_fails_when_the_shipped_runtime_settings_are_not_the_measured_ones(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = bundle_copy / "model" / "torch_runtime.json"  # what the runtime's own API reads
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "threads": 3}))
    _reexport_manifest(bundle_copy, lambda manifest: None)  # an exporter that wrote it so: every hash holds

    code = bundle_main(["verify", str(bundle_copy)])

    out = capsys.readouterr().out
    assert code == 1
    assert "model/ does not hold the measured settings: torch: threads is 3" in out
    assert "fails verification after re-measuring:" in out and "before any measurement" not in out
    assert any(line.startswith("speed.e2e_ms.p50") for line in out.splitlines())  # what it measured is shown


def _check(ok: bool) -> Check:
    return Check("accuracy.top1_agreement", 0.9, 0.9 if ok else 0.5, {"abs": 0.005})


@pytest.mark.parametrize(
    ("checks", "problems", "lines", "code"),
    [
        ([_check(True)], [], ["OK: within tolerance"], 0),
        ([_check(False)], [], ["FAILED: some figures are outside their tolerance"], 1),
        ([], ["missing file: model/x"],
         ["bundle b fails verification before any measurement:", "  missing file: model/x"], 1),
        ([_check(True)], ["model/ does not hold the measured settings: torch: threads is 3"],
         ["bundle b fails verification after re-measuring:",
          "  model/ does not hold the measured settings: torch: threads is 3"], 1),
        ([_check(False)], ["model/ does not hold the measured settings: torch: threads is 3"],
         ["bundle b fails verification after re-measuring:",
          "  model/ does not hold the measured settings: torch: threads is 3",
          "FAILED: some figures are outside their tolerance"], 1),
    ],
    ids=["ok", "out-of-tolerance", "before-measuring", "after-measuring", "after-measuring-and-out-of-tolerance"],
)
def test_verify_reports_problems_with_when_they_were_found_and_the_checks_it_measured(
    capsys: pytest.CaptureFixture[str], checks: list[Check], problems: list[str], lines: list[str], code: int
) -> None:
    assert report(Path("b"), Verification(problems=problems, checks=checks)) == code

    out = capsys.readouterr().out.splitlines()
    table = format_checks(checks).splitlines() if checks else []
    assert out == table + lines


def test_verify_fails_on_an_edited_manifest_body(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"]["accuracy.top1_agreement"]["value"] -= 0.01
    manifest_path.write_text(json.dumps(manifest))

    code = bundle_main(["verify", str(bundle_copy)])

    assert code == 1
    assert "manifest.json was edited" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tolerances", "problem"),
    [
        ({}, "no tolerance for accuracy.top1_agreement"),
        ("loosen", "loosens accuracy.top1_agreement"),
    ],
)
def test_verify_fails_on_emptied_or_loosened_tolerances(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str], tolerances: object, problem: str
) -> None:
    def edit(manifest: dict) -> None:
        if tolerances == "loosen":
            manifest["tolerances"]["accuracy.top1_agreement"] = {"abs": 1.0}
        else:
            manifest["tolerances"] = tolerances

    _reexport_manifest(bundle_copy, edit)

    code = bundle_main(["verify", str(bundle_copy)])

    assert code == 1
    assert problem in capsys.readouterr().out


def test_verify_checks_a_pinned_manifest_hash(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = bundle_main(["verify", str(bundle), "--manifest-sha256", "0" * 64])

    out = capsys.readouterr().out
    assert code == 1
    assert "not the pinned" in out and json.loads((bundle / "manifest.json").read_text())["manifest_sha256"] in out


def test_a_manifest_edited_with_a_recomputed_hash_fails_against_the_pinned_hash(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    trusted = json.loads((bundle_copy / "manifest.json").read_text())["manifest_sha256"]
    _reexport_manifest(bundle_copy, lambda manifest: manifest["metrics"]["speed.output_tokens_per_s"].update(value=1e9))
    assert check_hashes(bundle_copy) == []  # unpinned, nothing tells this manifest from the exported one

    code = bundle_main(["verify", str(bundle_copy), "--manifest-sha256", trusted])

    assert code == 1
    assert f"not the pinned {trusted}" in capsys.readouterr().out and "not pinned" not in caplog.text


def test_the_checks_table_shows_how_far_each_figure_moved() -> None:
    table = format_checks([
        Check("speed.output_tokens_per_s", 100.0, 35.0, {"factor": 3.0}),
        Check("accuracy.kl_mean", 1e-7, 3e-7, {"abs": 1e-6}),
        Check("speed.e2e_ms.p50", 0.0, 5.0, {"factor": 3.0}),
    ]).splitlines()

    assert table[0].split() == ["figure", "manifest", "now", "moved", "tolerance", "ok"]
    assert table[1].split() == ["speed.output_tokens_per_s", "100", "35", "0.35×", "×/÷", "3", "yes"]
    assert table[2].split()[:4] == ["accuracy.kl_mean", "1e-07", "3e-07", "+2e-07"]  # a difference, not "3×"
    assert table[3].split()[:4] == ["speed.e2e_ms.p50", "0", "5", "-"]  # no ratio to a 0


def test_tightened_tolerances_are_kept() -> None:
    tolerances, problems = effective_tolerances({**minimum_tolerances(), "accuracy.perplexity": {"rel": 0.001}}, None)

    assert problems == [] and tolerances["accuracy.perplexity"] == {"rel": 0.001}


@pytest.mark.parametrize(("argv", "said"), [
    (["/nonexistent/bundle"], "argument bundle: /nonexistent/bundle does not exist"),
    ([".", "--speed-tolerance", "0.5"], "argument --speed-tolerance: 0.5 is not a factor >= 1 (e.g. 1.5)"),
    ([".", "--speed-tolerance", "x"], "argument --speed-tolerance: invalid factor value: 'x'"),
])
def test_verify_refuses_a_missing_folder_and_a_factor_below_1_with_its_own_usage(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        bundle_main(["verify", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: python -m autoopt.bundle verify ")
    assert err.strip().splitlines()[-1] == f"python -m autoopt.bundle verify: error: {said}"


def test_speed_tolerance_is_a_factor_both_ways() -> None:
    tolerance = {"factor": 3.0}

    assert within(tolerance, 100.0, 290.0) and within(tolerance, 100.0, 34.0)
    assert not within(tolerance, 100.0, 310.0) and not within(tolerance, 100.0, 33.0)


def test_accuracy_tolerance_adds_relative_and_absolute_parts() -> None:
    tolerance = {"rel": 0.10, "abs": 1e-6}

    assert within(tolerance, 0.0, 1e-6) and within(tolerance, 1e-3, 1.1e-3)
    assert not within(tolerance, 0.0, 2e-6) and not within(tolerance, 1e-3, 1.2e-3)


def test_loading_a_bundle_imports_no_search_machinery(bundle: Path) -> None:
    code = (
        "import sys; from autoopt.bundle import load_bundle; "
        f"b = load_bundle({str(bundle)!r}); b.generate_text('def ', 2); b.close(); "
        f"print([m for m in sys.modules if m.split('.')[0] in {SEARCH_MACHINERY!r}])"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)

    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_command_lines_serve_and_verify_a_bundle(bundle: Path) -> None:
    served = subprocess.run(
        [sys.executable, "-m", "autoopt.serve", str(bundle), "--prompt", "def ", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    verified = subprocess.run(
        [sys.executable, "-m", "autoopt.bundle", "verify", str(bundle), "--speed-tolerance", "10"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )

    assert served.returncode == 0, served.stderr
    assert "e2e" in served.stderr and "ms" in served.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "×/÷ 10" in verified.stdout


@pytest.mark.slow
def test_genai_int4_bundle_serves_and_verifies_without_torch(tiny_model: Path, tmp_path: Path) -> None:
    genai = tiny_prepared(tiny_model, tmp_path / "cache", engines=["ort_genai"], precisions=["fp32", "int4"])
    m = measure(genai, CandidateConfig(engine="ort_genai", quant="int4"))
    out = export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, tmp_path / "bundle")
    code = (
        "import sys; from autoopt.bundle import load_bundle; "
        f"b = load_bundle({str(out)!r}); b.generate_text('def ', 2); b.close(); "
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )

    served = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    verified = bundle_main(["verify", str(out), "--speed-tolerance", "10"])

    assert served.stdout.strip() == "[]"
    assert verified == 0
    assert "model/genai_config.json" in json.loads((out / "manifest.json").read_text())["files"]


@pytest.mark.slow
def test_compiled_bundle_loads_its_shipped_graphs_over_an_empty_cache_and_verifies(
    tiny_model: Path, tmp_path: Path
) -> None:
    compiled = tiny_prepared(tiny_model, tmp_path / "cache", engines=["torch", "torch_compiled"],
                             precisions=["fp32", "bf16"])
    m = measure(compiled, CandidateConfig(engine="torch_compiled", quant="int8_weight", compile_mode="default"))
    out = export_bundle(m.result, m.artifact, m.reference, m.workload, m.resolved_config, tmp_path / "bundle")
    code = (
        "import json; from autoopt.bundle import load_bundle; "
        f"b = load_bundle({str(out)!r}); b.generate_text('def ', 2); print(json.dumps(b.engine.compile_cache))"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "empty inductor cache")}

    served = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                            env=env)
    cache = json.loads(served.stdout.strip().splitlines()[-1])

    assert any(name.startswith("model/inductor_cache/") for name in json.loads((out / "manifest.json").read_text())["files"])
    assert cache["hits"] >= 1 and cache["misses"] == 0, cache
    assert bundle_main(["verify", str(out), "--speed-tolerance", "10"]) == 0
    assert "cold start" in (out / "README.md").read_text()
