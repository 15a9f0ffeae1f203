"""The ground truth: every grid candidate built and measured once, each in its own child processes as
in a sweep, cached in one JSON file in the workspace.

The file is named by a fingerprint of what the figures depend on (model and its fp32 reference, target,
workload, bench settings, library versions, autoopt's own code, machine) and keyed inside by `candidate_key`, which
names the candidate completely: the space only decides which keys a grid needs, so spaces share one file
(measuring `space=smoke` first, then `space=default`, measures only what smoke lacked). It is
rewritten atomically after every candidate, so an interrupted run continues where it stopped. A failed
build or measurement is recorded with its reason and not retried. The code is in the fingerprint as in a study's
(`autoopt.study.fingerprint`): resuming or extending a grid after a fix to a pass or an engine would otherwise mix
two versions' figures and keep failures the fix removed. Any change to autoopt's sources therefore starts a new file;
`python -m autoopt.searchbench --truth FILE` still replays an older one as it is, since a replay is about the samplers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoopt.config.errors import ConfigError
from autoopt.config.knobs import label
from autoopt.config.schema import workload_record
from autoopt.digest import package_digest
from autoopt.env import cpu_model, library_versions
from autoopt.jobs.launch import JobFailed, Launcher
from autoopt.jobs.prepare import Prepared
from autoopt.result import MeasureResult
from autoopt.searchbench.grid import Grid

log = logging.getLogger("autoopt.searchbench")


def fingerprint(prep: Prepared) -> dict[str, Any]:
    """What every figure of the ground truth depends on; a change in any of them makes it stale."""
    return json.loads(json.dumps({
        "model": prep.model.key,
        "reference_sha256": prep.reference_sha256,
        "target": asdict(prep.target),
        "workload": workload_record(prep.workload),
        "bench": asdict(prep.bench),
        "libraries": library_versions(),
        "code": package_digest("autoopt"),  # a fixed pass or engine measures anew (module docstring)
        "machine": cpu_model(),
    }))


def truth_path(workspace: Path, prep: Prepared) -> Path:
    digest = hashlib.sha256(json.dumps(fingerprint(prep), sort_keys=True).encode()).hexdigest()[:12]
    name = f"{prep.model.name}-{prep.target.name}-{prep.workload.name}-{digest}.json"
    return workspace / "searchbench" / name


@dataclass
class Entry:
    """One grid candidate's outcome: its measurement, or the one-line reason it failed."""

    label: str
    params: dict[str, Any]
    result: MeasureResult | None = None
    failed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "params": self.params}
        if self.result is not None:
            out["result"] = self.result.to_dict()
        if self.failed is not None:
            out["failed"] = self.failed
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        result = MeasureResult.from_dict(d["result"]) if "result" in d else None
        return cls(d["label"], d["params"], result, d.get("failed"))


@dataclass
class GroundTruth:
    """Measured outcomes by candidate key, stored at `path` under `fingerprint`."""

    path: Path
    fingerprint: dict[str, Any]
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, fingerprint: dict[str, Any]) -> GroundTruth:
        """Load `path` if it exists (refusing one measured under another fingerprint), else start empty."""
        if not path.is_file():
            return cls(path, fingerprint)
        data = json.loads(path.read_text())
        changed = [k for k in set(fingerprint) | set(data["fingerprint"]) if data["fingerprint"].get(k) != fingerprint.get(k)]
        if changed:
            raise ConfigError(
                f"{path} was measured under other {', '.join(sorted(changed))}; remove it or use another workspace"
            )
        return cls(path, fingerprint, {k: Entry.from_dict(v) for k, v in data["entries"].items()})

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        """Read a ground-truth file as it is, whatever it was measured under (for replays and reports)."""
        if not path.is_file():
            raise ConfigError(f"no ground truth at {path}; measure it first (python -m autoopt.searchbench ...)")
        data = json.loads(path.read_text())
        return cls(path, data["fingerprint"], {k: Entry.from_dict(v) for k, v in data["entries"].items()})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        data = {"fingerprint": self.fingerprint, "entries": {k: e.to_dict() for k, e in self.entries.items()}}
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)


def measure_grid(
    grid: Grid,
    prep: Prepared,
    truth: GroundTruth,
    launcher: Launcher,
    say: Callable[[str], None] = log.info,
    clock: Callable[[], float] = time.monotonic,
) -> GroundTruth:
    """Build and measure every grid candidate `truth` lacks, saving after each; progress through `say`."""
    todo = [p for p in grid.points if p.key not in truth.entries]
    say(f"ground truth {truth.path}: {len(grid) - len(todo)} of {len(grid)} candidates already measured, "
        f"{len(todo)} to go")
    start = clock()
    for i, point in enumerate(todo, 1):
        entry = Entry(label(point.candidate), point.params)
        t0 = clock()
        try:
            built = launcher.launch(prep.build_job(point.candidate))
            entry.result = launcher.launch(prep.measure_job(point.candidate, built))
        except JobFailed as e:
            entry.failed = e.reason
        truth.entries[point.key] = entry
        truth.save()
        took, elapsed = clock() - t0, clock() - start
        eta = elapsed / i * (len(todo) - i)
        outcome = f"failed: {entry.failed}" if entry.failed else f"{took:.1f}s"
        say(f"[{len(grid) - len(todo) + i}/{len(grid)}] {entry.label} · {outcome} · eta {eta / 60:.1f} min")
    return truth
