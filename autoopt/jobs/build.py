"""The build step of a trial: a candidate's passes, run (or fetched from the cache) in a child process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from autoopt.config.schema import CandidateConfig
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan
from autoopt.result import Built


@dataclass(frozen=True)
class BuildJob:
    candidate: CandidateConfig
    device: str
    model_path: str
    model_key: str
    cache_dir: str

    timeout_s: ClassVar[float] = 1800.0

    @staticmethod
    def result_type() -> type[Built]:
        return Built

    def env(self) -> dict[str, str]:
        return {}

    def run(self) -> Built:
        steps = plan(self.candidate, self.device)
        return run_pipeline(Path(self.model_path), self.model_key, steps, Path(self.cache_dir))
