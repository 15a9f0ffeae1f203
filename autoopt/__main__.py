"""`python -m autoopt [overrides]`: search, record, pick and export. See README for the overrides."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from autoopt.config.errors import ConfigError
from autoopt.config.load import load_sweep_config
from autoopt.config.overrides import CONF_DIR, check_composition, check_overrides, exit_on_config_error
from autoopt.config.schema import CandidateConfig, SweepConfig
from autoopt.config.store import register
from autoopt.signals import Stopped, stopping_on_signals
from autoopt.space.validity import environment_problem

register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        sweep = load_sweep_config(cfg)
        # Trial 0, the fp32 torch reference, must run here or there is nothing to compare against.
        problem = environment_problem(CandidateConfig(), sweep.target)
        if problem:
            raise ConfigError(problem)
    from autoopt.study.report import print_outcome
    from autoopt.study.runner import run_sweep
    from autoopt.study.summary import SweepError

    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        with exit_on_config_error(), stopping_on_signals():  # e.g. a study measured under another fingerprint
            outcome = run_sweep(sweep, resolved)  # type: ignore[arg-type]
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Stopped as e:
        print(f"stopped ({e}): the trials that finished are in the study, a trial in flight is recorded as "
              f"interrupted; the same command goes on with the study", file=sys.stderr)
        sys.exit(128 + e.signum)
    print_outcome(outcome, sweep)


if __name__ == "__main__":
    with exit_on_config_error():
        check_overrides(sys.argv[1:], CONF_DIR, SweepConfig)
        check_composition("config", sys.argv[1:])
    main()
