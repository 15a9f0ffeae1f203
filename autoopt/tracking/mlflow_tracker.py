"""MLflow logging of a study: one parent run, one nested run per trial, the front on the parent.

MLflow is imported when a `Tracker` is made, never when this module is imported. The tracker talks to
the store through an `MlflowClient` of its own, so it neither reads nor changes MLflow's global active
run or tracking URI.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoopt.env import console_script
from autoopt.locks import sqlite_store_lock
from autoopt.report.tables import flatten
from autoopt.signals import Stopped

STATES = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}  # autoopt state -> MLflow run status
_BATCH = 100  # MLflow takes at most 100 params or tags per log_batch call
_MAX_TAG = 5000  # characters kept of a tag value (MLflow refuses more than 8000)


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _import_mlflow() -> Any:
    _quiet_mlflow()
    import mlflow

    _quiet_mlflow()  # mlflow configures its loggers on import; lower them again
    return mlflow


def _key(name: str) -> str:
    """MLflow keys may hold letters, digits, `_ - . /` and spaces; anything else becomes `_`."""
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number in `values`, nested mappings flattened with dots; booleans become 0/1;
    None, NaN, infinities and non-numbers are left out."""
    metrics = {}
    for name, value in flatten(values).items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[_key(name)] = float(value)
    return metrics


def _params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    return {_key(prefix + k): str(v)[:6000] for k, v in flatten(values).items()}


class Tracker:
    """Logs one study to MLflow.

    `uri` is a tracking URI (`sqlite:///abs/path/mlflow.db` or `http://host:port`). A new experiment
    stores its artifacts under `artifact_root` (never the working directory's `./mlruns`); an existing
    experiment is reused with the artifact location it already has. Call `start_parent` once, then
    `log_trial` per finished trial and `log_front` once, inside it.
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        mlflow = _import_mlflow()
        from mlflow.entities import Metric, Param

        self._entities = Metric, Param
        self.uri = uri
        with sqlite_store_lock(uri):
            self._client = mlflow.MlflowClient(tracking_uri=uri)
            found = self._client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise ValueError(
                    f"MLflow experiment {experiment!r} is deleted in {uri}; restore it in the UI, purge it with "
                    f"`mlflow gc --backend-store-uri {uri}`, or choose another experiment name"
                )
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                location = Path(artifact_root).expanduser().resolve()
                location.mkdir(parents=True, exist_ok=True)
                self.experiment_id = self._client.create_experiment(experiment, artifact_location=location.as_uri())
        self.parent_run_id: str | None = None

    @contextmanager
    def start_parent(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[str]:
        """Open the study's parent run and yield its id; it ends FINISHED, or FAILED if the block raises
        (KILLED on Ctrl-C or a signal: `autoopt.signals.Stopped`)."""
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        self.parent_run_id = run.info.run_id
        status = "FAILED"
        try:
            self._log(self.parent_run_id, params=_params(params), metrics={})
            yield self.parent_run_id
            status = "FINISHED"
        except (KeyboardInterrupt, Stopped):
            status = "KILLED"
            raise
        finally:
            self._client.set_terminated(self.parent_run_id, status)
            self.parent_run_id = None

    def log_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        state: str,
        reason: str | None = None,
        result_json: Mapping[str, Any] | None = None,
        texts: Mapping[str, str] | None = None,
    ) -> str:
        """One nested run `trial-<number>` under the parent: `params` are the candidate's knobs,
        `metrics` every numeric figure (see `numeric_metrics`), tags `autoopt.state` and `autoopt.reason`,
        and `result.json` and `texts` ({file name: content}) as artifacts when given. Returns the run id."""
        parent = self._require_parent()
        if state not in STATES:
            raise ValueError(f"trial state={state!r} is not known; choose one of: {', '.join(STATES)}")
        tags = {"mlflow.parentRunId": parent, "autoopt.state": state, "autoopt.trial": str(number)}
        if reason:
            tags["autoopt.reason"] = reason if len(reason) <= _MAX_TAG else reason[: _MAX_TAG - 3] + "..."
        run_id = self._client.create_run(self.experiment_id, run_name=f"trial-{number}", tags=tags).info.run_id
        self._log(run_id, params=_params(params), metrics=numeric_metrics(metrics))
        if result_json is not None:
            self._client.log_dict(run_id, dict(result_json), "result.json")
        for name, text in (texts or {}).items():
            self._client.log_text(run_id, text, name)
        self._client.set_terminated(run_id, STATES[state])
        return run_id

    def log_front(self, files: list[Path], metrics: Mapping[str, Any], chosen: Mapping[str, Any]) -> None:
        """On the parent: `files` as artifacts (CSV, Markdown, PNG, HTML), `metrics` (e.g. hypervolume),
        and the chosen candidate as params prefixed `chosen.` and as `chosen.json`. Call once per parent:
        MLflow refuses to change a param already logged."""
        parent = self._require_parent()
        self._log(parent, params=_params(chosen, prefix="chosen."), metrics=numeric_metrics(metrics))
        for path in files:
            self._client.log_artifact(parent, str(path))
        self._client.log_dict(parent, dict(chosen), "chosen.json")

    def ui_command(self) -> str:
        """The command that opens this store in the MLflow UI (for an http store, its address)."""
        if self.uri.startswith(("http://", "https://")):
            return self.uri
        return f"{console_script('mlflow')} ui --backend-store-uri {shlex.quote(self.uri)}"

    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("no parent run: call log_trial/log_front inside `with tracker.start_parent(...)`")
        return self.parent_run_id

    def _log(self, run_id: str, *, params: Mapping[str, str], metrics: Mapping[str, float]) -> None:
        metric_cls, param_cls = self._entities
        now = int(time.time() * 1000)
        param_list = [param_cls(k, v) for k, v in params.items()]
        metric_list = [metric_cls(k, v, now, 0) for k, v in metrics.items()]
        for start in range(0, max(len(param_list), len(metric_list)), _BATCH):
            self._client.log_batch(
                run_id, metrics=metric_list[start : start + _BATCH], params=param_list[start : start + _BATCH]
            )
