"""Compose the run configuration outside ``@hydra.main`` (tests, notebooks, sub-commands)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lra_bench.config import register_configs
from lra_bench.paths import conf_dir


def compose_config(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """The same config ``python -m lra_bench <overrides>`` would run with."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="lra_bench"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)
