"""The optimiser and learning-rate schedule of a run, built from the trainer settings.

Both protocols use ``torch.optim.AdamW``. Under the LRA paper's protocol this is exactly the
update of flax's ``optim.Adam(weight_decay=wd)`` that the LRA code trains with: flax computes
``p - lr * m_hat / (sqrt(v_hat) + eps) - lr * wd * p`` from the same ``p``; AdamW first scales
``p`` by ``1 - lr * wd`` and then takes the Adam step, which is the same sum (the decay is
multiplied by the scheduled rate in both, and applied to every parameter in both).

Schedules (``trainer.schedule``):

- ``one_cycle``: OneCycleLR, linear warm-up to ``lr`` over ``warmup_steps`` then linear decay
  over the remaining steps (the Skyformer paper's code; beta1 also cycles 0.85..0.95).
- ``warmup_rsqrt``: the LRA code's ``constant * linear_warmup * rsqrt_decay``,
  ``lr * min(1, t / w) / sqrt(max(t, w))``.
- ``warmup_cosine``: the LRA code's ``constant * linear_warmup * cosine_decay``,
  ``lr * min(1, t / w) * max(0, (1 + cos(pi * (max(0, (t - w) / c) mod 1))) / 2)`` with cycle
  ``c = cycle_steps`` (default: all steps, as the LRA configs' ``steps_per_cycle``).

Here ``t`` counts the updates already made: the first update uses ``t = 0`` (a zero rate under
linear warm-up), as flax evaluates the schedule at ``optimizer.state.step`` before stepping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

SCHEDULES = ("one_cycle", "warmup_rsqrt", "warmup_cosine")


@dataclass
class WarmupRsqrt:
    """``min(1, t / warmup) / sqrt(max(t, warmup))``: the factor multiplying the base rate."""

    warmup: int

    def __call__(self, step: int) -> float:
        return min(1.0, step / self.warmup) / math.sqrt(max(step, self.warmup))


@dataclass
class WarmupCosine:
    """``min(1, t / warmup) * max(0, (1 + cos(pi * progress)) / 2)``, progress cyclic after the
    warm-up."""

    warmup: int
    cycle: int

    def __call__(self, step: int) -> float:
        progress = max(0.0, (step - self.warmup) / float(self.cycle))
        return min(1.0, step / self.warmup) * max(
            0.0, 0.5 * (1.0 + math.cos(math.pi * (progress % 1.0)))
        )


def make_optimizer(
    model: torch.nn.Module, trainer_cfg: Any
) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """AdamW over ``model``'s parameters and the scheduler of ``trainer_cfg.schedule``; step the
    scheduler once per update.

    ``trainer_cfg`` is the trainer section (``lr``, ``betas``, ``eps``, ``weight_decay``,
    ``steps``, ``warmup_steps``, ``schedule``, ``cycle_steps``).
    """
    tc = trainer_cfg
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=tc.lr,
        betas=tuple(tc.betas),
        eps=tc.eps,
        weight_decay=tc.weight_decay,
        fused=on_cuda(model) or None,
    )
    schedule = getattr(tc, "schedule", "one_cycle")
    if schedule == "one_cycle":
        # OneCycleLR with its defaults (as the peer code), so beta1 also cycles 0.85..0.95.
        scheduler: LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=tc.lr,
            total_steps=tc.steps,
            pct_start=tc.warmup_steps / tc.steps,
            anneal_strategy="linear",
        )
    elif schedule == "warmup_rsqrt":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupRsqrt(tc.warmup_steps))
    elif schedule == "warmup_cosine":
        cycle = getattr(tc, "cycle_steps", None) or tc.steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(tc.warmup_steps, cycle)
        )
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose {', '.join(SCHEDULES)}")
    return optimizer, scheduler


def on_cuda(model: torch.nn.Module) -> bool:
    """True when every parameter lives on a CUDA device (where fused optimiser kernels exist)."""
    params = list(model.parameters())
    return bool(params) and all(p.is_cuda for p in params)
