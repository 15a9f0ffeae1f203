"""`python -m autoopt.measure [overrides]`: build one candidate, measure it, print and save the result."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from autoopt.config.errors import ConfigError
from autoopt.config.load import load_measure_config
from autoopt.config.overrides import CONF_DIR, check_composition, check_overrides, exit_on_config_error
from autoopt.config.schema import MeasureConfig
from autoopt.config.serving import default_traffic_note
from autoopt.config.store import register
from autoopt.jobs.launch import JobFailed
from autoopt.models.source import model_traits
from autoopt.progress import listening
from autoopt.space.validity import candidate_problem

if TYPE_CHECKING:
    from autoopt.jobs.coldstart import ColdStart

log = logging.getLogger("autoopt")
register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="measure")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        m = load_measure_config(cfg)
        problem = candidate_problem(m.candidate, m.target, model_traits(m.model), m.workload)
        if problem:
            raise ConfigError(problem)

    from autoopt.jobs.launch import SubprocessLauncher
    from autoopt.jobs.prepare import prepare
    from autoopt.report.measurement import measurement_table

    if m.serving and (note := default_traffic_note(m.workload.name, m.workload.serving)):
        log.warning("%s", note)
    with exit_on_config_error():  # e.g. prompts longer than the model's positions
        prep = prepare(m.model, m.target, m.workload, m.bench, Path(m.cache_dir).expanduser(), serving=m.serving)
    launcher = SubprocessLauncher()
    with exit_on_job_failure(m.workspace), listening(lambda step: log.info("%s", step)):  # a minute or more
        built = launcher.launch(prep.build_job(m.candidate))
        result = launcher.launch(prep.measure_job(m.candidate, built))
    if not m.workload.decoding.greedy:
        d = m.workload.decoding
        print(f"decoding    every row sampled: temperature {d.temperature}, top_p {d.top_p}, top_k {d.top_k or 'off'}, "
              f"seeds from {d.seed} (its host draws are in every speed figure; accuracy adds sampled agreement)")
    print(measurement_table(result))
    if result.serving is not None:
        from autoopt.report.load_curve import load_curve_markdown

        print(load_curve_markdown(result.serving))
    saved = result.to_dict()
    if m.output:  # before the cold starts, so that one failing keeps the measurement
        Path(m.output).write_text(json.dumps(saved, indent=2))
        print(f"wrote {m.output}")
    if m.coldstart:
        from autoopt.jobs.coldstart import cold_starts
        from autoopt.report.measurement import coldstart_table

        with exit_on_job_failure(m.workspace):
            starts = cold_starts(prep, m.candidate, built, launcher)
        print(coldstart_table(starts))
        if m.output:
            saved["coldstart"] = [coldstart_dict(c) for c in starts]
            Path(m.output).write_text(json.dumps(saved, indent=2))
            print(f"added the cold starts to {m.output}")


def coldstart_dict(start: ColdStart) -> dict[str, Any]:
    """One strategy's row of the cold-start table, `ready_s` included (a property, not a field)."""
    return {**asdict(start), "ready_s": start.ready_s}


@contextmanager
def exit_on_job_failure(workspace: str) -> Iterator[None]:
    """A child that raised, crashed or timed out: its reason on stderr, its traceback in the workspace, exit 1."""
    try:
        yield
    except JobFailed as e:
        log_file = e.save_log(workspace, "measure")
        print(f"error: {e.reason}\n(the child's traceback is in {log_file})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    with exit_on_config_error():
        check_overrides(sys.argv[1:], CONF_DIR, MeasureConfig)
        check_composition("measure", sys.argv[1:])
    main()
