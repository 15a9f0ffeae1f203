"""`python -m autoopt [overrides]`: search, record, pick and export. See README for the overrides."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from autoopt.config.load import load_sweep_config
from autoopt.config.overrides import CONF_DIR, check_overrides, exit_on_config_error
from autoopt.config.schema import SweepConfig
from autoopt.config.store import register

register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        sweep = load_sweep_config(cfg)
    from autoopt.study.report import print_outcome
    from autoopt.study.runner import run_sweep

    resolved = OmegaConf.to_container(cfg, resolve=True)
    print_outcome(run_sweep(sweep, resolved), sweep)  # type: ignore[arg-type]


if __name__ == "__main__":
    with exit_on_config_error():
        check_overrides(sys.argv[1:], CONF_DIR, SweepConfig)
    main()
