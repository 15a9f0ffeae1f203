"""`python -m autoopt.searchbench [overrides] [--seeds N] [--samplers a,b] [--max-trials K] [--prior FILE]
[--measure-only | --truth FILE]`

Measures every candidate of the space once (cached and resumable in `<workspace>/searchbench/`), then
replays each sampler over `--seeds` seeds against that ground truth and writes the hypervolume-fraction
table and plot next to it. Hydra overrides are those of `python -m autoopt` (`space=smoke
workload=smoke target=cpu`, `search.latency=...`, `search.min_top1_agreement=...`, `space.threads=[0]`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from autoopt.config.errors import ConfigError
from autoopt.config.load import load_sweep_config
from autoopt.config.overrides import CONF_DIR, check_composition, check_overrides, exit_on_config_error
from autoopt.config.schema import CandidateConfig, SweepConfig
from autoopt.config.store import register
from autoopt.space.validity import environment_problem

register()
log = logging.getLogger("autoopt.searchbench")


def _options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    from autoopt.searchbench.samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="python -m autoopt.searchbench", add_help=False)
    parser.add_argument("--seeds", type=int, default=20, help="replays per sampler (seeds 0..N-1)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, of: {', '.join(SAMPLERS)}")
    parser.add_argument("--max-trials", type=int, default=60, help="replay up to this many measured trials (k)")
    parser.add_argument("--measure-only", action="store_true", help="measure the ground truth, replay nothing")
    parser.add_argument("--truth", type=Path, default=None,
                        help="replay against this ground-truth file as it is (measured earlier, perhaps by other "
                        "code): nothing is measured, its fingerprint is not compared with this run's")
    parser.add_argument("--prior", type=Path, default=None,
                        help="another ground-truth file (another target, workload or machine): each sampler is also "
                        "replayed warm-started from its feasible front, as search.warm_start does in a sweep")
    parser.add_argument("--help", action="help")
    options, rest = parser.parse_known_args(argv)
    if unknown := [s for s in options.samplers.split(",") if s not in SAMPLERS]:
        parser.error(f"--samplers {','.join(unknown)}: no such sampler; choose from {', '.join(SAMPLERS)}")
    for flag, value in (("--seeds", options.seeds), ("--max-trials", options.max_trials)):
        if value < 1:
            parser.error(f"{flag} {value} must be >= 1")
    # before the grid is measured, which can take hours
    for flag, path in (("--truth", options.truth), ("--prior", options.prior)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file; give a ground-truth file that python -m autoopt.searchbench wrote")
    return options, rest


OPTIONS, _HYDRA_ARGS = _options(sys.argv[1:]) if __name__ == "__main__" else (None, [])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from autoopt.jobs.launch import SubprocessLauncher
    from autoopt.jobs.prepare import prepare
    from autoopt.searchbench.grid import enumerate_grid
    from autoopt.searchbench.ground_truth import GroundTruth, fingerprint, measure_grid, truth_path
    from autoopt.space.validity import candidate_problem
    from autoopt.study.runner import searchable
    from autoopt.study.summary import SweepError
    from autoopt.study.trial import candidate_key

    assert OPTIONS is not None
    with exit_on_config_error():
        sweep = load_sweep_config(cfg)
        problem = environment_problem(CandidateConfig(), sweep.target)
        if problem:
            raise ConfigError(problem)
        if sweep.search.objective != "latency":
            raise ConfigError(
                f"search.objective={sweep.search.objective}: the search benchmark replays the latency objective "
                "only (its ground truth has no serving figures); drop the override"
            )
    workspace = Path(sweep.workspace).expanduser().resolve()
    with exit_on_config_error():  # e.g. prompts longer than the model's positions
        prep = prepare(sweep.model, sweep.target, sweep.workload, sweep.bench, Path(sweep.cache_dir).expanduser())
    try:  # the grid, and the loops replayed on it, are what a sweep here would search
        sweep = searchable(sweep, prep)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    grid = enumerate_grid(
        sweep.space, lambda c: candidate_key(c, prep),
        lambda c: candidate_problem(c, prep.target, prep.model.traits, prep.workload),
    )
    log.info("grid of space=%s:\n%s", sweep.space.name, grid.describe())
    with exit_on_config_error():
        if OPTIONS.truth is not None:
            truth = GroundTruth.load(OPTIONS.truth)
            log.info("replaying %s as it is (measured under %s)", truth.path, truth.fingerprint)
        else:
            truth = GroundTruth.open(truth_path(workspace, prep), fingerprint(prep))
            measure_grid(grid, prep, truth, SubprocessLauncher())
    if OPTIONS.measure_only:
        return
    from autoopt.searchbench.replay import Bench, outcomes_of, prior_front, replay_all
    from autoopt.searchbench.report import space_digest, write_report

    results = {k: e.result if e.result is not None else (e.failed or "failed") for k, e in truth.entries.items()}
    with exit_on_config_error():
        bench = Bench.of(grid.points, results, sweep.space, sweep.search, prep.target,
                         key=lambda c: candidate_key(c, prep),
                         problem=lambda c: candidate_problem(c, prep.target, prep.model.traits, prep.workload))
    warm = []
    if OPTIONS.prior is not None:
        prior = GroundTruth.load(OPTIONS.prior)
        prior_results = {k: e.result if e.result is not None else (e.failed or "failed") for k, e in prior.entries.items()}
        warm = prior_front(outcomes_of(prior_results, sweep.search, prep.target),
                           {k: e.params for k, e in prior.entries.items()}, sweep.space)
        log.info("warm start from %s: %d front candidates this space can produce", prior.path, len(warm))
    curves = replay_all(bench, OPTIONS.samplers.split(","), range(OPTIONS.seeds), OPTIONS.max_trials,
                        say=log.info, warm=warm)
    # one folder per ground truth, space, prior, seeds and trials: other replays never overwrite it
    prior_tag = f"-from-{OPTIONS.prior.stem}" if OPTIONS.prior is not None else ""
    folder = truth.path.parent / (f"report-{truth.path.stem}-{sweep.space.name}-{space_digest(sweep.space)}"
                                  f"-s{OPTIONS.seeds}-k{OPTIONS.max_trials}{prior_tag}")
    files = write_report(bench, curves, folder, title=f"space={sweep.space.name} workload={sweep.workload.name} "
                         f"target={sweep.target.name}: {len(grid)} candidates, {OPTIONS.seeds} seeds")
    print(files[0].read_text())
    print("\n".join(f"wrote {f}" for f in files))


if __name__ == "__main__":
    with exit_on_config_error():
        check_overrides(_HYDRA_ARGS, CONF_DIR, SweepConfig)
        check_composition("config", _HYDRA_ARGS)
    sys.argv = [sys.argv[0], *_HYDRA_ARGS]
    main()
