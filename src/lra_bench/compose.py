"""Compose the run configuration outside ``@hydra.main`` (tests, notebooks, sub-commands)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lra_bench.config import register_configs
from lra_bench.paths import conf_dir


def compose_config(
    overrides: Sequence[str] = (), *, return_hydra_config: bool = False
) -> DictConfig:
    """The same config ``python -m lra_bench <overrides>`` would run with.

    Inside a running Hydra app of this package (the bench), that app's search path (the same
    ``conf`` folder) is used as it is.
    """
    register_configs()
    if GlobalHydra.instance().is_initialized():
        return compose(
            config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )
    with initialize_config_dir(
        config_dir=str(conf_dir()), version_base="1.3", job_name="lra_bench"
    ):
        return compose(
            config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )
