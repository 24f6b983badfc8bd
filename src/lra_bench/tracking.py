"""Experiment tracking: nothing by default, Weights & Biases with ``logger=wandb``."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


class Tracker:
    """No-op tracker; ``log`` and ``finish`` are safe to call always."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(Tracker):
    def __init__(self, cfg: DictConfig, run_dir: str, run_name: str) -> None:
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            tags=list(cfg.logger.tags),
            name=run_name,
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            resume="allow",
            id=run_name.replace("/", "-"),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def finish(self) -> None:
        self.run.finish()


def make_tracker(cfg: DictConfig, run_dir: str, run_name: str) -> Tracker:
    if cfg.logger.name == "wandb":
        return WandbTracker(cfg, run_dir, run_name)
    return Tracker()
