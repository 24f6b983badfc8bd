"""A run's ``kind`` for the leaderboard: ``full``, or ``smoke`` for a wiring check.

A run is ``smoke`` when any of these holds:

- the smoke trainer preset was chosen (``trainer=smoke``);
- it trains or evaluates on a slice of the data (``data.limit_train`` or ``data.limit_eval`` set);
- it trains for fewer than ``SMOKE_STEPS`` steps.

Everything else (the paper protocols, ``experiment=cpu_demo``, your own settings) is ``full``.
Reports leave smoke rows out unless asked (``leaderboard show --smoke``).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

FULL, SMOKE = "full", "smoke"
SMOKE_STEPS = 200


def trainer_choice() -> str | None:
    """The ``trainer`` preset Hydra composed (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("trainer")


def run_kind(cfg: DictConfig) -> str:
    """``smoke`` or ``full`` by the rules above."""
    limited = any(
        OmegaConf.select(cfg, f"data.{key}", default=None) is not None
        for key in ("limit_train", "limit_eval")
    )
    short = OmegaConf.select(cfg, "trainer.steps", default=SMOKE_STEPS) < SMOKE_STEPS
    return SMOKE if trainer_choice() == "smoke" or limited or short else FULL
