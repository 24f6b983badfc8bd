"""``python -m lra_bench task=<task> attn=<attention> [overrides]``: one run, or a sweep with -m."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lra_bench.errors import ERROR_STATUS, RunError
from lra_bench.joblog import mirror_to_job_log
from lra_bench.paths import conf_dir
from lra_bench.precheck import run_app


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lra_bench.train import main as train_main  # after the config checks: a typo costs less

    with mirror_to_job_log():  # the job log (lra_bench.log) gets what the terminal shows
        status = train_main(cfg)
    if status == ERROR_STATUS and HydraConfig.get().mode == RunMode.MULTIRUN:
        # a failed run of a sweep (its error already printed, and kept in its folder) leaves the
        # others going; the sweep ends with status 2 after them
        raise RunError(
            f"{cfg.task.name}/{cfg.attn.name} seed {cfg.seed} failed (its error is above); "
            "the sweep's other runs went on"
        )
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_app(main)
