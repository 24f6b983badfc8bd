"""Train-step mode's settings: what ``python -m lra_bench`` would train for each bench variant.

Each variant's attention, model, task and trainer come from the run config composed exactly as
a run composes it (task, protocol, ``attn=<name>``, the entry's options as ``attn.<key>=<value>``
and the bench's ``run.<key>=<value>`` overrides, e.g. ``run.experiment=cpu_demo``), so the
attention dropout is each run's own unless the bench's ``dropout`` replaces it for every variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lra_bench.benchmarking.variants import Variant
from lra_bench.errors import BenchError, ConfigError


@dataclass(frozen=True)
class Trained:
    """One variant's run settings: plain dicts the worker process receives."""

    attn: dict[str, Any]
    task: dict[str, Any]
    model: dict[str, Any]
    trainer: dict[str, Any]


def run_overrides(cfg: DictConfig, variant: Variant) -> list[str]:
    """The command-line overrides of the run this variant's row stands for."""
    options = [f"attn.{key}={value}" for key, value in variant.options.items()]
    return [
        f"task={cfg.task.name}",
        f"protocol={cfg.protocol.name}",
        f"attn={variant.name}",
        *options,
        *cfg.run,
    ]


def trained_settings(cfg: DictConfig, variant: Variant) -> Trained:
    """The composed run config of ``variant``; ``cfg.dropout`` (unless None) replaces the
    attention's dropout, ``train.lr`` and ``train.amp`` (unless None) the trainer's."""
    from lra_bench.compose import compose_config
    from lra_bench.config import validate

    try:
        run_cfg = compose_config(run_overrides(cfg, variant))
        if cfg.dropout is not None:
            run_cfg.attn.dropout = cfg.dropout
        for key in ("lr", "amp"):
            if cfg.train[key] is not None:
                run_cfg.trainer[key] = cfg.train[key]
        validate(run_cfg)
    except ConfigError as err:
        raise BenchError(f"attention {variant.label}: {err}") from None
    except Exception as err:  # Hydra's own override errors
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            raise BenchError(f"{variant.label}: {str(err).splitlines()[0]}") from None
        raise
    parts = {
        key: OmegaConf.to_container(run_cfg[key], resolve=True) for key in Trained.__annotations__
    }
    return Trained(**parts)  # type: ignore[arg-type]


def precision_label(trainer: dict[str, Any], device: str) -> str:
    """The number format a train-step case trains in, as the tables name it: ``bf16-amp`` or
    ``fp16-amp`` (``trainer.amp`` and ``trainer.amp_dtype``, decided as a run decides them), else
    ``float32``, which names the fp16 asked for where the device cannot train in it
    (``float32 (fp16 requested, CPU)``)."""
    import torch

    from lra_bench.runtime import fp16_unavailable, precision_of

    where = torch.device(device)
    amp, dtype = bool(trainer["amp"]), str(trainer.get("amp_dtype", "auto"))
    name, autocast_dtype = precision_of(amp, where, dtype)
    if autocast_dtype is not None:
        return name
    if fp16_unavailable(amp, dtype, where):
        return f"float32 (fp16 requested, {where.type.upper()})"
    return "float32"


def dropout_note(rows: list[dict[str, Any]], fixed: float | None) -> str:
    """The line under the train-step table saying which attention dropout each row trained with."""
    if fixed is not None:
        return (
            f"Attention dropout {fixed:g} for every variant (not as trained: each run's own is "
            "in its config; `dropout=null` times that)."
        )
    own = ", ".join(
        f"{row['label']} {row['attn_dropout']}" for row in rows if "attn_dropout" in row
    )
    return f"Attention dropout as trained (each run's composed config): {own}."
