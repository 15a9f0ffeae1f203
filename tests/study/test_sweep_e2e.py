"""A real smoke sweep on the built-in model: Optuna, the isolated builds and measurements, MLflow and
the bundle, with nothing replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _sweep(workspace: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(workspace), "AUTOOPT_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "autoopt", "workload=smoke", "space=smoke", "search.n_trials=4", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workspace, timeout=1200)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workspace = tmp_path_factory.mktemp("ws")
    proc = _sweep(workspace, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workspace, proc


def test_sweep_prints_front_choice_bundle_and_ui_command(sweep) -> None:
    _, proc = sweep

    for line in ("Pareto front", "chosen      trial", "why ", "bundle      ", "mlflow ui --backend-store-uri sqlite:///"):
        assert line in proc.stdout


def test_sweep_leaves_parent_nested_runs_and_front_artifacts_in_mlflow(sweep) -> None:
    import mlflow

    workspace, _ = sweep
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]

    measured = [r for r in children if r.data.tags["autoopt.state"] == "complete" and "reused" not in r.data.tags.get("autoopt.reason", "")]
    assert len(parents) == 1 and len(children) >= 4
    assert len(measured) == 4
    assert {r.data.tags["autoopt.state"] for r in children} <= {"complete", "pruned", "failed"}
    reference = next(r for r in children if r.data.tags["autoopt.trial"] == "0")
    assert reference.data.metrics["accuracy.top1_agreement"] == 1.0
    assert reference.data.metrics["accuracy.kl_mean"] == 0.0
    for run in measured:  # each measured candidate carries where its time went, as a table
        profile = client.download_artifacts(run.info.run_id, "profile.md", str(workspace / "downloaded" / run.info.run_id))
        assert "| decode |" in Path(profile).read_text()
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"front.csv", "front.md", "bottlenecks.md", "front.png", "front_3d.html", "chosen.json"} <= artifacts
    assert parents[0].data.metrics["hypervolume"] >= 0
    assert not (workspace / "mlruns").exists()


def test_rerun_extends_the_same_study_without_remeasuring(sweep, cache_dir: Path) -> None:
    import optuna

    workspace, _ = sweep
    storage = f"sqlite:///{workspace / 'optuna.db'}"
    (before,) = optuna.get_all_study_summaries(storage)

    proc = _sweep(workspace, cache_dir, "search.n_trials=1")

    assert proc.returncode == 0, proc.stderr[-3000:]
    (after,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=after.study_name, storage=storage)
    new = study.trials[before.n_trials :]
    assert after.n_trials > before.n_trials
    # smoke's space holds four candidates and the first run measured all of them
    assert all("reused_from" in t.user_attrs or t.state.name == "PRUNED" for t in new)
    said = " ".join((proc.stdout + proc.stderr).split())  # the progress display wraps log lines
    assert "with 0 of 1 candidates measured: the others proposed were pruned or measured before" in said


def test_a_rerun_of_a_named_study_over_other_space_values_is_refused_in_one_line(sweep, cache_dir: Path) -> None:
    """(A study named by default would start a new study instead: its name carries the space's digest.)"""
    import optuna

    workspace, _ = sweep
    storage = f"sqlite:///{workspace / 'optuna.db'}"
    (before,) = optuna.get_all_study_summaries(storage)

    proc = _sweep(workspace, cache_dir, f"study.name={before.study_name}", "space.quant=[none,int4]")

    (after,) = optuna.get_all_study_summaries(storage)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: study " in proc.stderr
    assert "searched other choices (torch.quant ['none', 'int8_dynamic'] -> ['none'])" in " ".join(proc.stderr.split())
    assert after.n_trials == before.n_trials


def test_exported_bundle_verifies(sweep) -> None:
    workspace, _ = sweep
    (bundle,) = (workspace / "bundles").iterdir()  # the last export of the study (a rerun above re-exports it)
    manifest = json.loads((bundle / "manifest.json").read_text())
    # confirmed before the export (search.confirm_rounds is 3 here): the bundle carries the side-by-side ratio
    confirmed = manifest["measured_in"]["confirmed"]
    speedup = confirmed["output_tokens_per_s"]
    assert len(speedup["rounds"]) == 3 and speedup["median"] == sorted(speedup["rounds"])[1]
    said = " ".join((bundle / "README.md").read_text().split())
    assert f"timed side by side: {speedup['median']:.2f}x the output tokens/s" in said

    proc = subprocess.run(
        [sys.executable, "-m", "autoopt.bundle", "verify", str(bundle)], capture_output=True, text=True, cwd=REPO
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert manifest["metrics"]["accuracy.top1_agreement"]["value"] >= 0.95


def test_a_warm_started_study_measures_the_earlier_front_right_after_the_reference(sweep, cache_dir: Path) -> None:
    import optuna

    from autoopt.study.trial import feasible
    from autoopt.study.warm import front_params

    workspace, _ = sweep
    storage = f"sqlite:///{workspace / 'optuna.db'}"
    earlier = next(n for n in optuna.get_all_study_names(storage) if n != "warm")
    done = optuna.load_study(study_name=earlier, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    expected = front_params((t.params, t.values) for t in done if feasible(t))

    proc = _sweep(workspace, cache_dir, "study.name=warm", f"search.warm_start=[{earlier}]",
                  f"search.n_trials={1 + len(expected)}", "search.confirm_rounds=0")

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warm start: {len(expected)} front candidates of {earlier}" in proc.stderr + proc.stdout
    trials = optuna.load_study(study_name="warm", storage=storage).trials
    assert [t.params for t in trials[1 : 1 + len(expected)]] == expected


def test_an_unknown_warm_start_study_stops_in_one_line_and_leaves_no_study_behind(sweep, cache_dir: Path) -> None:
    import optuna

    workspace, _ = sweep
    storage = f"sqlite:///{workspace / 'optuna.db'}"

    proc = _sweep(workspace, cache_dir, "study.name=bad", "search.warm_start=[nope]")

    assert proc.returncode == 2
    assert "search.warm_start names study 'nope', which the storage lacks" in proc.stderr + proc.stdout
    assert "bad" not in optuna.get_all_study_names(storage)
