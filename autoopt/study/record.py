"""What autoopt keeps on each Optuna trial, and on the study the trials measured again after the search. This module
is the only code that knows the attribute keys."""

from __future__ import annotations

from dataclasses import dataclass, fields

import optuna

from autoopt.config.schema import CandidateConfig
from autoopt.config.serde import from_dict, to_dict
from autoopt.result import MeasureResult

_REMEASURED = "remeasured:"  # + trial number: a study attribute, one per trial, so that none is rewritten whole


@dataclass(frozen=True)
class TrialRecord:
    """A trial's candidate and what became of it.

    `key` identifies what gets measured (runtime defaults resolved); `result` is the measurement
    (None while running, or when pruned/failed); `reason` says why a trial was pruned or failed, or which
    trial's result it reused (`reused_from`); `detail` holds a failure's traceback tail.
    """

    candidate: CandidateConfig
    label: str
    key: str | None = None
    result: MeasureResult | None = None
    reason: str | None = None
    detail: str | None = None
    reused_from: int | None = None

    def write(self, trial: optuna.Trial) -> None:
        """Store every field that is set on the running `trial` (call again after adding fields)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("candidate", "result"):
                value = to_dict(value)
            trial.set_user_attr(f.name, value)

    @staticmethod
    def interrupted(trial: optuna.Trial, reason: str) -> None:
        """Mark the running `trial` as stopped from outside: its `reason` set, its candidate key cleared, so that it
        is not held against its candidate (`Known.of` skips it)."""
        trial.set_user_attr("key", None)
        trial.set_user_attr("reason", reason)

    @staticmethod
    def present(trial: optuna.trial.FrozenTrial) -> bool:
        """Whether autoopt wrote a record on `trial` (a trial asked by another tool has none)."""
        return "candidate" in trial.user_attrs

    @classmethod
    def read(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        values = {f.name: attrs.get(f.name) for f in fields(cls)}
        values["candidate"] = from_dict(CandidateConfig, attrs["candidate"])
        if values["result"] is not None:
            values["result"] = MeasureResult.from_dict(values["result"])
        return cls(**values)


def keep_remeasured(study: optuna.Study, number: str, result: MeasureResult) -> None:
    """Keep on `study` trial `number`'s re-measurement after the search (its artifact rebuilt with other files), so
    that later runs of the study take it for the trial's figures and accept the rebuilt folder."""
    study.set_user_attr(f"{_REMEASURED}{number}", to_dict(result))


def remeasured(study: optuna.Study) -> dict[str, MeasureResult]:
    """The re-measurements `keep_remeasured` kept on `study`, by trial number."""
    return {key.removeprefix(_REMEASURED): MeasureResult.from_dict(value)
            for key, value in study.user_attrs.items() if key.startswith(_REMEASURED)}
