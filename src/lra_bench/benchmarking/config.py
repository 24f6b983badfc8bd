"""The bench's settings: ``BenchConfig`` holds every default of ``python -m lra_bench.bench``.

Registered with Hydra's ConfigStore as ``bench_schema`` (the first entry of conf/bench.yaml's
defaults), so Hydra refuses an unknown key or a value of the wrong type; ``check`` then applies
the range and choice rules each field declares (``rule``). Either way a bad value costs one
line: ``error: <key>: <rule>, got <value>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lra_bench.errors import BenchError

MODES = ("attention", "train_step", "data")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def rule(
    default: Any = None,
    *,
    low: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: Sequence[str] = (),
) -> Any:
    """A field with ``default`` and the values it accepts (checked by ``check``): ``low`` <= value,
    ``above`` < value, value < ``below``, one of ``choices``. For a list, each item."""
    rules = {"low": low, "above": above, "below": below, "choices": tuple(choices)}
    meta = {k: v for k, v in rules.items() if v is not None and v != ()}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SpreadConfig:
    """quick=false: after each length, its variants in interleaved rounds (A B C A B C)."""

    tolerance: float = rule(0.05, above=0)  # stop when each ratio over the last `window`
    # rounds is within ±tolerance (5%) of its median
    window: int = rule(5, low=1)
    budget_s: float = rule(60.0, low=0)  # per length; past it the rounds stop (the table says
    # the spread was not reached)
    max_rounds: int = rule(50, low=1)


@dataclass
class TrainConfig:
    """train_step mode; None = as the run trains (its composed config)."""

    batch_size: int | None = rule(None, above=0)  # None = the run's batch size
    seq_len: int | None = rule(None, above=0)  # None = the task's max_len in the run
    amp: bool | None = None  # None = the run's; true/false: mixed precision on/off for all
    lr: float | None = rule(None, above=0)  # None = the run's rate


@dataclass
class BenchConfig:
    """Every setting of the bench, with its default (conf/bench.yaml documents the command)."""

    # the config groups conf/bench.yaml chooses: the task (train_step and data) and the protocol
    # the timed runs train under (train_step); some protocols also set model and trainer keys
    task: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)

    mode: str = rule("attention", choices=MODES)
    # names, name:key=value[:key=value] (e.g. softmax:impl=math -> softmax-math), or all
    attns: list[str] = rule(["all"])
    baseline: str = "softmax"  # the label ratios are taken against (same run, same n)
    n: list[int] = rule([1024, 2048, 4096, 8192], above=0)  # attention: sequence lengths
    batch: int = rule(4, above=0)
    heads: int = rule(2, above=0)
    head_dim: int = rule(32, above=0)
    dtype: str = rule("float32", choices=DTYPE_NAMES)  # attention mode
    # attention dropout for every variant; None = train_step: as trained (each run's composed
    # config: softmax 0.1), attention: 0
    dropout: float | None = rule(None, low=0, below=1)
    # true: each variant timed alone (repeats), no interleaved rounds: faster, ratios less steady
    quick: bool = False
    spread: SpreadConfig = field(default_factory=SpreadConfig)
    warmup: int = rule(1, low=0)  # untimed runs before the memory-tracked run and the timed ones
    repeats: int = rule(5, above=0)  # timed runs (median); fewer when they would pass the limit
    case_timeout_s: float = rule(120.0, above=0)  # per (attention, n) case: past it, a timeout
    budget_s: float | None = None  # whole bench: cases after it are skipped (None = no budget)
    skip_longer_after_failure: bool = True  # after an OOM/timeout, skip its longer lengths
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = rule(None, above=0)  # torch intra-op threads (None = torch's default)
    # process: cases run in a worker process (killed on a hang) | none: in this process
    isolate: str = rule("process", choices=("process", "none"))
    # CPU, isolate=process: cap on a case's extra memory (None = 80% of available, 0 = none)
    mem_limit_mb: float | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    # train_step and data: overrides of the timed runs' config (run.<key>=<value> on the
    # command line, e.g. run.experiment=cpu_demo)
    run: list[str] = rule([])
    batches: int = rule(50, above=0)  # data: timed batches (after `warmup` untimed ones)
    # data: train (the training stream) | val (the dev loader)
    data_split: str = rule("train", choices=("train", "val"))
    out_dir: str = "results/bench"  # CSV, Markdown and plot: attention.* or train_step_<task>.*
    plot: bool = True  # attention mode: time and memory vs length, log-log (needs matplotlib)
    progress: bool = True


def register_bench_config() -> None:
    """Register ``BenchConfig`` as ``bench_schema`` (conf/bench.yaml's first default)."""
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


def _problem(value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` under the rules ``meta``, or None."""
    if value is None:
        return None
    if "choices" in meta:
        if value not in meta["choices"]:
            return f"choose {' or '.join(meta['choices'])}"
        return None
    wanted = [f">= {meta['low']:g}"] if "low" in meta else []
    wanted += [f"> {meta['above']:g}"] if "above" in meta else []
    wanted += [f"< {meta['below']:g}"] if "below" in meta else []
    if not wanted:
        return None
    bad = not math.isfinite(value)
    bad |= "low" in meta and value < meta["low"]
    bad |= "above" in meta and value <= meta["above"]
    bad |= "below" in meta and value >= meta["below"]
    return f"must be {' and '.join(wanted)}" if bad else None


def _shown(value: Any, listed: bool) -> str:
    """A value as the command line writes it: ``0`` not ``0.0``, strings quoted, lists listed."""
    if listed:
        return repr(list(value))
    return f"{value:g}" if isinstance(value, float) else repr(value)


def check(cfg: DictConfig, schema: type = BenchConfig, prefix: str = "") -> None:
    """BenchError (one line) on the first value outside its field's rule, before any work."""
    for spec in fields(schema):
        key, value = prefix + spec.name, cfg[spec.name]
        if spec.default_factory is not MISSING and is_dataclass(spec.default_factory):
            check(value, spec.default_factory, key + ".")  # type: ignore[arg-type]
            continue
        listed = isinstance(value, Sequence) and not isinstance(value, str)
        if spec.name == "n" and not value:
            raise BenchError("n: give at least one sequence length")
        for item in value if listed else [value]:
            problem = _problem(item, dict(spec.metadata))
            if problem:
                raise BenchError(f"{key}: {problem}, got {_shown(value, listed)}")


register_bench_config()  # importing the bench's settings makes them known to Hydra
