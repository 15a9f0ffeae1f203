"""`python -m autoopt` stopped by SIGTERM or Ctrl-C (SIGINT) while a trial is measured: one line, exit 128 + the
signal, the trial in flight recorded as interrupted (not as a failure of its candidate, so the next run proposes it
again), the MLflow parent run KILLED and no job process left behind. Both signals used to leave the trial RUNNING
in the study for good; SIGTERM also left the parent run RUNNING, and SIGINT printed a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _trial_in_flight(storage: str, proc: subprocess.Popen[str], timeout_s: float = 300.0) -> int:
    """The number of a trial after the reference that stays RUNNING for two polls a second apart (being built or
    measured, not just proposed)."""
    import optuna

    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(1.0)
        try:
            (name,) = optuna.get_all_study_names(storage)
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except Exception:  # noqa: BLE001 - the store is still being created
            continue
        running = [t.number for t in trials if t.number > 0 and t.state.name == "RUNNING"]
        if running and running[0] == seen:
            return seen
        seen = running[0] if running else None
    raise AssertionError("no trial after the reference was measured in time")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_records_the_trial_in_flight_as_interrupted_and_exits_in_one_line(
    tmp_path: Path, cache_dir: Path, signum: int
) -> None:
    import mlflow
    import optuna

    env = {**os.environ, "AUTOOPT_WORKSPACE": str(tmp_path), "AUTOOPT_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "autoopt", "workload=smoke", "space=smoke", "search.n_trials=4",
           "search.warm_start=[]"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    number = _trial_in_flight(storage, proc)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()

    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr
    assert f"stopped ({signal.Signals(signum).name}): the trials that finished are in the study" in stderr
    (name,) = optuna.get_all_study_names(storage)
    trial = optuna.load_study(study_name=name, storage=storage).trials[number]
    assert trial.state.name == "FAIL" and trial.user_attrs["key"] is None
    assert trial.user_attrs["reason"] == f"interrupted: Stopped: {signal.Signals(signum).name}"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    parents = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"]
    assert children and not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_a_study_stopped_during_its_reference_starts_anew_and_a_late_signal_leaves_a_told_trial_alone(
    tmp_path: Path,
) -> None:
    import optuna

    from autoopt.signals import Stopped
    from autoopt.study.runner import _reference_interrupted
    from autoopt.study.trial import interrupted

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize"] * 3)
    trial = study.ask()
    interrupted(study, trial, Stopped(signal.SIGINT))
    assert _reference_interrupted(storage, "s")

    done = study.ask()
    study.tell(done, [1.0, 1.0, 0.0])
    interrupted(study, done, Stopped(signal.SIGTERM))  # the signal came after the tell: nothing to record
    assert study.trials[1].state.name == "COMPLETE" and "reason" not in study.trials[1].user_attrs
