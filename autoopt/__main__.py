"""`python -m autoopt [overrides]`: search, record, pick and export. See README for the overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from autoopt.config.errors import ConfigError
from autoopt.config.load import load_sweep_config
from autoopt.config.overrides import check_overrides
from autoopt.config.schema import SweepConfig
from autoopt.config.store import register

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        sweep = load_sweep_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from autoopt.study.report import print_outcome
    from autoopt.study.runner import run_sweep

    resolved = OmegaConf.to_container(cfg, resolve=True)
    print_outcome(run_sweep(sweep, resolved), sweep)  # type: ignore[arg-type]


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF_DIR, SweepConfig)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
