"""The optimiser and learning-rate schedule of a run, built from the trainer settings."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler


def make_optimizer(model: torch.nn.Module, trainer_cfg: Any) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """AdamW and a linear one-cycle schedule over ``trainer_cfg.steps`` with ``warmup_steps`` of warm-up.

    OneCycleLR keeps its other defaults, as the Skyformer code does, so beta1 also cycles
    between 0.85 and 0.95.
    """
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=trainer_cfg.lr,
        betas=tuple(trainer_cfg.betas),
        eps=trainer_cfg.eps,
        weight_decay=trainer_cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=trainer_cfg.lr,
        total_steps=trainer_cfg.steps,
        pct_start=trainer_cfg.warmup_steps / trainer_cfg.steps,
        anneal_strategy="linear",
    )
    return optimizer, scheduler
