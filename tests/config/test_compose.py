from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from autoopt.config import ConfigError, MeasureConfig
from autoopt.config.load import load_measure_config
from autoopt.config.overrides import check_composition, check_overrides
from autoopt.config.serving import default_traffic_note
from autoopt.config.store import register
from autoopt.space.validity import target_problem
from tests.conftest import REPO

CONF = REPO / "conf"
GROUP_FILES = sorted((g.name, f.stem) for g in CONF.iterdir() if g.is_dir() and g.name != "local" for f in g.glob("*.yaml"))


def _compose(*overrides: str):
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("measure", overrides=["workspace=/tmp/ws", "cache_dir=/tmp/cache", *overrides])


@pytest.mark.parametrize(("group", "name"), [gf for gf in GROUP_FILES if gf[0] in ("target", "model", "workload")])
def test_every_group_file_composes_onto_its_schema(group: str, name: str) -> None:
    extra = ["model.path=" + str(REPO / "tests")] if (group, name) == ("model", "hf") else []
    cfg = _compose(f"{group}={name}", *extra)

    typed = load_measure_config(cfg) if group != "model" or name == "builtin" else None

    assert cfg[group].name == name
    if typed is not None:
        assert isinstance(typed, MeasureConfig)


def test_cpu_target_detects_cores_and_memory() -> None:
    typed = load_measure_config(_compose())

    assert typed.target.cores >= 1
    assert typed.target.memory_gb > 0
    assert typed.target.price_source


@pytest.mark.parametrize(("output", "message"), [
    ("/nonexistent/r.json", "output=/nonexistent/r.json: folder /nonexistent does not exist"),
    ("/tmp", "output=/tmp is a folder; give a file path"),
])
def test_an_output_that_cannot_be_written_is_refused_before_measuring(output: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_measure_config(_compose(f"output={output}"))


def test_a_serving_knob_is_refused_unless_the_measurement_runs_the_serving_load() -> None:
    with pytest.raises(ConfigError, match=r"candidate.serving_max_batch=8 .* add serving=true"):
        load_measure_config(_compose("candidate.serving_max_batch=8"))
    assert load_measure_config(_compose("candidate.serving_max_batch=8", "serving=true")).serving


def test_a_cache_dir_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path) -> None:
    (tmp_path / "a_file").write_text("")

    with pytest.raises(ConfigError, match=f"cache_dir={tmp_path}/a_file/cache cannot be created .*AUTOOPT_CACHE"):
        load_measure_config(_compose(f"cache_dir={tmp_path}/a_file/cache"))


def test_cores_other_than_the_priced_instances_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    load_measure_config(_compose("target.cores=2"))
    assert "vCPUs" not in caplog.text
    load_measure_config(_compose("target.cores=4"))
    assert "candidates run on 4 cores but target.price_per_hour ($0.0892) is for 2 vCPUs" in caplog.text


def test_more_cores_than_this_process_may_use_are_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    usable = len(os.sched_getaffinity(0))
    load_measure_config(_compose(f"target.cores={usable}"))
    assert "oversubscribing" not in caplog.text
    load_measure_config(_compose(f"target.cores={usable + 62}"))
    said = (f"target.cores={usable + 62} but this process may use {usable} CPUs here, so a candidate that takes its "
            f"threads from target.cores runs {usable + 62} threads oversubscribing {usable} CPUs: its speed figures "
            "are not the target's")
    assert caplog.text.count(said) == 1
    caplog.clear()
    load_measure_config(_compose("target=t4", f"target.cores={usable + 62}"))  # host threads: not the GPU's speed
    assert "oversubscribing" not in caplog.text


def test_gpu_targets_name_their_price_source() -> None:
    for name in ("t4", "a100", "h100"):
        cfg = _compose(f"target={name}")
        assert cfg.target.device == "cuda"
        assert cfg.target.price_per_hour > 0
        assert "on-demand" in cfg.target.price_source


def _load_candidate(cfg) -> None:
    """What `python -m autoopt.measure` checks before any work: the config, then the candidate on the target."""
    m = load_measure_config(cfg)
    problem = target_problem(m.candidate, m.target)
    if problem:
        raise ConfigError(problem)


BAD = [
    (["candidate.engine=foo"], "candidate.engine=foo is not valid; choose one of: torch, ort, ort_genai, ort_tensorrt, torch_compiled"),
    (["candidate.quant=int3"], "candidate.quant=int3 is not valid"),
    (["candidate.quant=int4"], "engine=torch does not run quant=int4 on cpu"),
    (["target=t4", "candidate.quant=bf16"], "quant=bf16 needs bf16, which target=t4 does not support"),
    (["candidate.engine=ort_tensorrt"], "engine=ort_tensorrt is not available on target=cpu"),
    (["candidate.engine=torch", "candidate.fuse=true"], "candidate.fuse does not apply to engine=torch"),
    (["candidate.engine=torch", "candidate.graph_opt=basic"], "candidate.graph_opt does not apply to engine=torch"),
    (["candidate.quant_block_size=48"], "candidate.quant_block_size=48 is not valid"),
    (["candidate.threads=64"], "threads=64 exceeds the"),
    (["target.cores=2", "candidate.threads=8"], "threads=8 exceeds the 2 cores of target=cpu; use at most 2 "
     "(0 = all cores), or a bigger target.cores"),
    (["target.cores=-2"], "target.cores=-2 must be >= 0 (0 = detect)"),
    (["target.memory_gb=-1"], "target.memory_gb=-1.0 must be >= 0 (0 = detect)"),
    (["model=hf"], "model.path is required for model=hf"),
    (["model=hf", "model.path=/nonexistent"], "is not a Hugging Face model folder"),
    (["workload.batch_size=0"], "workload.batch_size=0 must be >= 1"),
    (["workload.prompt_lengths=[]"], "workload.prompt_lengths=[] must be a non-empty list"),
    (["workload.output_lengths=[1]"], "workload.output_lengths=[1] must be a non-empty list of lengths >= 2"),
    (["target.price_per_hour=-1"], "target.price_per_hour=-1.0 must be >= 0"),
    (["workload.decoding.temperature=3"], "workload.decoding.temperature=3.0 must be in [0, 2.0] (0 = greedy)"),
    (["workload.decoding.temperature=1", "workload.decoding.top_p=0"], "workload.decoding.top_p=0.0 must be in (0, 1]"),
    (["workload.decoding.top_p=0.9"], "workload.decoding.top_p=0.9 has no effect at temperature 0 (greedy); set "
     "workload.decoding.temperature > 0 to sample, or drop top_p/top_k"),
    (["workload.decoding.top_p=0.9", "workload.decoding.top_k=5"],
     "workload.decoding.top_p=0.9 and top_k=5 have no effect"),
]


def test_cuts_with_a_temperature_or_top_k_1_at_greedy_are_accepted() -> None:
    load_measure_config(_compose("workload.decoding.temperature=0.8", "workload.decoding.top_p=0.9"))
    load_measure_config(_compose("workload.decoding.top_k=1"))  # the argmax either way


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_value_fails_with_key_value_and_choices(overrides: list[str], message: str) -> None:
    cfg = _compose(*overrides)

    with pytest.raises(ConfigError) as err:
        _load_candidate(cfg)

    assert message in str(err.value)
    assert "\n" not in str(err.value)


BAD_OVERRIDES = [
    ("candidate.foo=1", "unknown key candidate.foo; candidate takes: attn_backend, batch_size"),
    ("foo=1", "unknown key foo; the top level takes:"),
    ("target=nope", "target=nope is not a config in conf/target; choose one of: a100, cpu, h100, t4"),
    ("candidate.threads=abc", "candidate.threads=abc must be an integer"),
    ("bench.min_seconds=x", "bench.min_seconds=x must be a number"),
    ("candidate.fuse=maybe", "candidate.fuse=maybe must be true or false"),
    ("workload.prompt_lengths=64", "workload.prompt_lengths=64 must be a list: write workload.prompt_lengths=[64]"),
    ("workload.output_lengths=[8,x]", "workload.output_lengths=[8,x] has x; each item must be an integer"),
    ("workload.serving.classes.P0.slo_ms=-5", "workload.serving.classes is a list: index it by position, e.g. "
     "workload.serving.classes.0.slo_ms=-5 (not P0)"),
    ("workload.serving.classes.0.sloms=5", "unknown key workload.serving.classes.0.sloms; workload.serving.classes.0 "
     "takes: itl_slo_ms, name, on_full, priority"),
]


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES)
def test_bad_override_is_named_before_hydra_runs(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides([override], CONF, MeasureConfig)

    assert message in str(err.value)


def test_cli_bad_override_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autoopt.measure", "candidate.engine=foo"], capture_output=True, text=True, cwd=REPO
    )

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: candidate.engine=foo is not valid; choose one of: torch, ort, ort_genai, ort_tensorrt, torch_compiled"
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.sampler=x", "error: search.sampler=x is not valid; choose one of: tpe, nsga2, random"),
        ("space=nope", "error: space=nope is not a config in conf/space; choose one of: default, full, gpu, serving, smoke"),
        ("export.pick=best", "error: export.pick=best is not valid; choose one of: fastest, knee, min_latency, min_cost, max_accuracy, weights"),
        ("export.runoff_margin=2", "error: export.runoff_margin=2.0 must be within [0, 1] (0 = no runoff)"),
        ("search.min_decode_prefix_agreement=1.5",
         "error: search.min_decode_prefix_agreement=1.5 must be within [0, 1] (0 = no bar)"),
        ("space.engine=ort", "error: space.engine=ort must be a list: write space.engine=[ort]"),
        ("export.weights=[0,0,0]", "error: export.weights=[0.0, 0.0, 0.0] must be non-negative and not all zero, "
         "e.g. [1, 1, 1]"),
        ("export.weights=[1,-1,1]", "error: export.weights=[1.0, -1.0, 1.0] must be non-negative and not all zero, "
         "e.g. [1, 1, 1]"),
    ],
)
def test_sweep_cli_bad_override_exits_2_with_one_line(override: str, message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "autoopt", override], capture_output=True, text=True, cwd=REPO)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


def test_sweep_config_composes_with_every_space() -> None:
    from autoopt.config.load import load_sweep_config

    register()
    for space in sorted(p.stem for p in (CONF / "space").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["workspace=/tmp/ws", "cache_dir=/tmp/cache", f"space={space}"])
        assert load_sweep_config(cfg).space.name == space


def test_sweep_on_a_gpu_target_without_a_gpu_stops_before_any_work() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")

    proc = subprocess.run([sys.executable, "-m", "autoopt", "target=t4", "space=gpu"], capture_output=True, text=True, cwd=REPO)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: target=t4 needs a CUDA device; this machine has none (measure it on the target itself)"
    ]



@pytest.mark.parametrize(("primary", "local", "extra"), [("config", "sweep", ""), ("measure", "measure", "output: mine.json\n")])
def test_local_settings_override_the_primary_configs_own_values(primary: str, local: str, extra: str, tmp_path) -> None:
    """README: your own settings go in conf/local/<sweep|measure>.yaml; the primary file's own values (its bench
    block, measure's output) must not silently override them."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / f"{local}.yaml").write_text("# @package _global_\nbench:\n  min_seconds: 7.5\n" + extra)
    register()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(primary, overrides=["workspace=/tmp/ws", "cache_dir=/tmp/cache"])

    assert cfg.bench.min_seconds == 7.5
    if extra:
        assert cfg.output == "mine.json"


def test_a_bad_serving_setting_names_the_key_as_it_is_overridden() -> None:
    with pytest.raises(ConfigError, match=r"^workload\.serving\.rate_rps=0\.0 must be positive"):
        load_measure_config(_compose("workload.serving.rate_rps=0"))


@pytest.mark.parametrize("module", ["autoopt", "autoopt.measure", "autoopt.searchbench"])
def test_a_workspace_that_cannot_be_a_folder_fails_in_one_line_before_hydra(module: str, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(blocker / "workspace")}
    proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, cwd=REPO, env=env)

    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: cannot create the run folder {blocker}/workspace/hydra/")
    assert "set workspace= or AUTOOPT_WORKSPACE to a writable folder" in proc.stderr


def test_a_run_folder_in_a_folder_nothing_can_be_created_in_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot create the run folder /proc/autoopt-run \(nothing can be created in /proc"):
        check_composition("measure", ["hydra.run.dir=/proc/autoopt-run"])


@pytest.mark.parametrize(("text", "message"), [
    ("search:\n  n_trails: 3\n", r"^In 'local/sweep': Key 'n_trails' not in 'SearchConfig' \(at search.n_trails\)$"),
    ("search:\n  n_trials: many\n", r"^In 'local/sweep': Value 'many' of type 'str' could not be converted to Integer "
                                     r"\(at search.n_trials\)$"),
    ("search:\n  n_trials: [3\n", r"^while parsing a flow sequence .* expected ',' or ']', but got '<stream end>'"),
])
def test_a_local_file_that_does_not_fit_the_schema_is_refused_in_one_line(tmp_path, text: str, message: str) -> None:
    conf = shutil.copytree(CONF, tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "sweep.yaml").write_text("# @package _global_\n" + text)
    register()

    with pytest.raises(ConfigError, match=message):
        check_composition("config", [f"workspace={tmp_path}/ws"], conf)


@pytest.mark.parametrize(("override", "message"), [
    ("model.path", r"^Error parsing override 'model.path' missing EQUAL at '<EOF>'$"),
    ("model.path=[1]", r"^Error merging override model.path=\[1\] Cannot convert 'list' to string: '\[1\]' "
                       r"\(at model.path\)$"),  # the reason is the cause Hydra chains
])
def test_an_override_hydra_cannot_parse_or_merge_is_refused_in_one_line_with_its_reason(override: str,
                                                                                       message: str) -> None:
    register()
    with pytest.raises(ConfigError, match=message):
        check_composition("config", [override])


def test_the_run_folder_check_leaves_only_the_folder_hydra_keeps_between_runs(tmp_path) -> None:
    register()
    check_composition("config", [f"workspace={tmp_path}/ws"])

    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == ["ws", "ws/hydra", "ws/hydra/sweep"]


def test_a_warm_start_study_the_storage_lacks_is_refused_before_any_model_work(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "autoopt", "search.warm_start=[nope]", f"workspace={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: search.warm_start names study 'nope', which the storage lacks; it has: no other study")
    assert "fp32 reference ready" not in proc.stderr + proc.stdout


def test_the_stream_workload_sets_streaming_deadlines_and_no_end_to_end_one() -> None:
    classes = load_measure_config(_compose("workload=stream")).workload.serving.classes

    assert [(c.name, c.slo_ms, c.ttft_slo_ms, c.itl_slo_ms) for c in classes] == [
        ("P0", 0.0, 300.0, 40.0), ("P1", 0.0, 1000.0, 80.0), ("P3", 0.0, 0.0, 0.0)]
    with pytest.raises(ConfigError, match=r"^workload\.serving\.classes\[0\]\.itl_slo_ms=-1\.0 must be zero"):
        load_measure_config(_compose("workload=stream", "workload.serving.classes.0.itl_slo_ms=-1"))


@pytest.mark.parametrize(("workload", "declares"), [("chat", False), ("serve", True), ("stream", True)])
def test_a_workload_without_a_serving_section_is_named_as_measuring_the_default_traffic(workload: str,
                                                                                       declares: bool) -> None:
    w = load_measure_config(_compose(f"workload={workload}")).workload
    note = default_traffic_note(w.name, w.serving)

    assert (note is None) is declares
    if note:
        assert note.startswith(f"workload {workload} declares no serving traffic") and "P0 200 ms (10%)" in note
    changed = load_measure_config(_compose(f"workload={workload}", "workload.serving.rate_rps=1.5")).workload
    assert default_traffic_note(changed.name, changed.serving) is None
