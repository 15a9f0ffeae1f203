from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoopt.env import console_script
from autoopt.tracking import numeric_metrics
from tests.together import run_together


def test_importing_tracking_does_not_import_mlflow() -> None:
    code = "import sys, autoopt.tracking; print('mlflow' in sys.modules)"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "False"


def test_numeric_metrics_flattens_and_skips_what_is_not_a_finite_number() -> None:
    values = {
        "speed": {"e2e_ms": {"p90": 12.5, "n": 20}},
        "memory": {"device_peak_mb": None},
        "accuracy": {"kl_mean": float("nan"), "perplexity": float("inf")},
        "build": {"cached": True, "key": "ab12"},
    }

    assert numeric_metrics(values) == {"speed.e2e_ms.p90": 12.5, "speed.e2e_ms.n": 20.0, "build.cached": 1.0}


@pytest.mark.slow
def test_tracker_logs_parent_nested_trials_and_front_outside_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from autoopt.tracking import Tracker

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "artifacts"
    report = tmp_path / "report"
    report.mkdir()
    files = [report / name for name in ("front.csv", "front.md", "front.png", "front.html")]
    for f in files:
        f.write_text(f.name)
    result = {"candidate": {"engine": "ort", "quant": "int4"}, "speed": {"e2e_ms": {"p90": 9.5}}}

    tracker = Tracker(uri, "sweep-test", artifacts)
    with pytest.raises(RuntimeError, match="start_parent"):
        tracker.log_trial(0, {}, {}, "complete")
    with tracker.start_parent("study-1", {"n_trials": 3}, {"autoopt.target": "cpu-2core"}) as parent_id:
        with pytest.raises(ValueError, match="complete, pruned, failed"):
            tracker.log_trial(0, {}, {}, "done")
        tracker.log_trial(0, {"engine": "torch", "quant": "none"}, {"speed": {"e2e_ms": {"p90": 20.0}}}, "complete")
        tracker.log_trial(1, {"engine": "torch", "quant": "int4"}, {}, "pruned", "int4 needs engine ort")
        tracker.log_trial(2, result["candidate"], {**result, "memory": {"device_peak_mb": None}}, "complete",
                          None, result, {"profile.md": "| phase | op type |"})  # fmt: skip
        tracker.log_front(files, {"hypervolume": 0.42}, {"engine": "ort", "quant": "int4"})

    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["sweep-test"], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == ["study-1", "trial-0", "trial-1", "trial-2"]
    parent = by_name["study-1"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert parent.data.metrics == {"hypervolume": 0.42}
    assert parent.data.params == {"n_trials": "3", "chosen.engine": "ort", "chosen.quant": "int4"}
    assert parent.data.tags["autoopt.target"] == "cpu-2core"
    for name in ("trial-0", "trial-1", "trial-2"):
        assert by_name[name].data.tags["mlflow.parentRunId"] == parent_id
    pruned = by_name["trial-1"]
    assert pruned.data.tags["autoopt.state"] == "pruned" and pruned.info.status == "KILLED"
    assert pruned.data.tags["autoopt.reason"] == "int4 needs engine ort"
    assert by_name["trial-2"].data.tags["autoopt.state"] == "complete"
    assert by_name["trial-2"].data.params == {"engine": "ort", "quant": "int4"}
    assert by_name["trial-2"].data.metrics == {"speed.e2e_ms.p90": 9.5}

    parent_files = {p.name for p in (artifacts / parent_id / "artifacts").iterdir()}
    assert parent_files == {"front.csv", "front.md", "front.png", "front.html", "chosen.json"}
    trial_2 = artifacts / by_name["trial-2"].info.run_id / "artifacts" / "result.json"
    assert json.loads(trial_2.read_text()) == result
    assert (trial_2.parent / "profile.md").read_text() == "| phase | op type |"
    assert not (artifacts / by_name["trial-1"].info.run_id / "artifacts").exists()
    assert list(cwd.iterdir()) == []
    assert tracker.ui_command() == f"{console_script('mlflow')} ui --backend-store-uri {uri}"
    assert Tracker(uri, "sweep-test", tmp_path / "elsewhere").experiment_id == tracker.experiment_id


def test_trackers_opening_one_new_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    names = ["study-a", "study-b", "study-b"]  # two sweeps of other studies, and one study run twice

    failed = run_together("import mlflow\nfrom autoopt.tracking import Tracker",
                          "Tracker(f\"sqlite:///{folder / 'mlflow.db'}\", name, folder / 'artifacts')", tmp_path, names)

    assert failed == []


def test_printed_commands_name_the_copy_beside_this_interpreter_which_a_venv_leaves_off_path() -> None:
    beside = Path(sys.executable).with_name("mlflow")
    assert beside.exists()  # the tests run from the venv the README's setup makes
    assert console_script("mlflow") == str(beside)
    assert console_script("no-such-tool") == "no-such-tool"
