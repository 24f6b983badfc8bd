"""Time and peak memory of a run, estimated from short measured training steps of its config.

One training step (``step.train_step``: forward, loss, backward, clipping, optimiser and schedule)
of the run's model, attention, optimiser and micro-batch runs on random full-length tokens (the
task's ``max_len``, or ``data.max_length`` when that caps the generated lengths) in the bench's
worker process, under its memory cap, at batches 1, 2, 4, ... up to the run's micro-batch. When
a step of a larger batch would take longer than ``budget_s``, the time and memory at the
micro-batch are extrapolated linearly in the batch through the last two measured batches (said
so in the result). The estimate is for the training steps only:
evaluation and data preparation come on top.

Results are cached as JSON per (config without its seed, device) under
``<paths.cache_dir>/table_estimates/``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lra_bench.io import atomic_write_json

VERSION = 3  # of the measurement: a change here invalidates the cache
CACHE_FOLDER = "table_estimates"
STATE_BYTES_PER_PARAM = 16  # fp32 weights, gradients and Adam's two moments
MIN_SCHEDULE_STEPS = 1000
REPEATS, REPEAT_WITHIN_MS = 5, 1000.0  # timed steps per batch: up to 5 while they take under 1 s


@dataclass(frozen=True)
class StepCase:
    """What the worker measures: one run's training step (picklable; the bench worker's case)."""

    label: str
    attn: dict[str, Any]
    task: dict[str, Any]
    model: dict[str, Any]
    trainer: dict[str, Any]
    n: int
    batch: int  # the run's micro-batch
    device: str
    budget_s: float = 10.0
    time_limit_s: float = 300.0
    mem_limit_mb: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Estimate:
    """A measured config: step time and peak memory at the run's micro-batch, how they were had."""

    status: str  # ok | oom | timeout | invalid | error
    step_ms: float | None = None  # one optimiser step (all micro-batches)
    peak_mb: float | None = None  # the step's peak plus weights, gradients and optimiser state
    measured_batches: tuple[int, ...] = ()
    extrapolated: bool = False
    measure_s: float = 0.0
    error: str = ""
    cached: bool = False


def step_length(cfg: DictConfig) -> int:
    """Tokens per sequence a step pays for: ``task.max_len``, capped by ``data.max_length``."""
    cap = OmegaConf.select(cfg, "data.max_length", default=None)
    return int(min(cfg.task.max_len, cap)) if cap else int(cfg.task.max_len)


def make_case(
    cfg: DictConfig, device: str, budget_s: float, mem_limit_mb: float | None
) -> StepCase:
    """The case of a run's config (``trainer.batch_size // grad_accum`` examples per micro-batch)."""

    def plain(node: Any) -> dict[str, Any]:
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]

    trainer = plain(cfg.trainer)
    batch = max(1, int(trainer["batch_size"]) // int(trainer.get("grad_accum") or 1))
    return StepCase(
        f"{cfg.task.name}/{cfg.attn.name}", plain(cfg.attn), plain(cfg.task), plain(cfg.model),
        trainer, step_length(cfg), batch, device, budget_s, mem_limit_mb=mem_limit_mb,
    )  # fmt: skip


def _one_step(case: StepCase, batch: int) -> tuple[float, float, int]:
    """(ms, extra peak MB, parameters) of a training step at ``batch``: after one warm-up step, the
    fastest of up to ``REPEATS`` steps (steadier than one on a busy machine), the peak of the first."""
    from lra_bench.benchmarking.measure import random_batch, time_ms
    from lra_bench.model import build_model
    from lra_bench.runtime import PeakMemory, resolve_device
    from lra_bench.step import make_train_state, train_step

    device = resolve_device(case.device)
    torch.manual_seed(case.seed)
    cfg = OmegaConf.create({"task": case.task, "attn": case.attn, "model": case.model})
    module = build_model(cfg).to(device).train()
    # a schedule long enough for the measured steps (one_cycle refuses steps past its end)
    trainer = {**case.trainer, "steps": max(int(case.trainer["steps"]), MIN_SCHEDULE_STEPS)}
    state = make_train_state(module, OmegaConf.create(trainer), device)
    batches = itertools.repeat(random_batch(case.task, batch, case.n, device, case.seed))
    train_step(state, batches)  # warm-up: kernels chosen, optimiser state allocated
    memory = PeakMemory(device)
    memory.start()
    times = [time_ms(lambda: train_step(state, batches), device)]
    peak = memory.peak_mb()
    while len(times) < REPEATS and sum(times) < REPEAT_WITHIN_MS:
        times.append(time_ms(lambda: train_step(state, batches), device))
    return min(times), peak, sum(p.numel() for p in module.parameters())


def _line(b: int, at: tuple[int, float], through: tuple[int, float]) -> float:
    """The line through two measured (batch, value) points at batch ``b``, never below the larger
    batch's value (noise can make the smaller batch look dearer)."""
    (b1, y1), (b2, y2) = at, through
    return max(y1 + (y2 - y1) * (b - b1) / (b2 - b1), y2)


def measure_case(case: StepCase) -> dict[str, Any]:
    """The worker's measurement of ``case``: steps at batches 1, 2, 4, ... up to the micro-batch,
    stopping once the next would pass ``budget_s``; exact when the micro-batch itself was measured,
    else the line through the last two points at the micro-batch."""
    began = time.monotonic()
    accum = int(case.trainer.get("grad_accum") or 1)
    points: list[tuple[int, float, float]] = []  # (batch, ms, peak MB)
    batch, params = 1, 0
    while True:
        ms, mb, params = _one_step(case, batch)
        points.append((batch, ms, mb))
        if batch >= case.batch or ms * min(2, case.batch / batch) > case.budget_s * 1000:
            break
        batch = min(2 * batch, case.batch)
    last = points[-1]
    if last[0] == case.batch or len(points) == 1:
        ms, mb = last[1] * case.batch / last[0], last[2] * case.batch / last[0]
    else:
        before = points[-2]
        ms = _line(case.batch, (before[0], before[1]), (last[0], last[1]))
        mb = _line(case.batch, (before[0], before[2]), (last[0], last[2]))
    return {
        "step_ms": ms * accum,
        "peak_mb": mb + params * STATE_BYTES_PER_PARAM / 2**20,
        "measured_batches": [p[0] for p in points],
        "extrapolated": last[0] != case.batch,
        "measure_s": time.monotonic() - began,
    }


def device_slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "device"


def cache_path(cache_dir: Path, shape_digest: str, device: str) -> Path:
    return Path(cache_dir) / CACHE_FOLDER / f"v{VERSION}-{shape_digest}-{device_slug(device)}.json"


def load_cached(path: Path) -> Estimate | None:
    """A cached estimate; None when absent or damaged (it is then measured again)."""
    try:
        data = json.loads(path.read_text())
        data["measured_batches"] = tuple(data["measured_batches"])
        return Estimate(**{**data, "cached": True})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def from_result(result: dict[str, Any]) -> Estimate:
    """An Estimate from the worker's result (its status, or the measured figures)."""
    if result.get("status") != "ok":
        return Estimate(
            str(result.get("status", "error")), error=str(result.get("error", ""))[:300]
        )
    fields = {k: result[k] for k in ("step_ms", "peak_mb", "extrapolated", "measure_s")}
    return Estimate("ok", measured_batches=tuple(result["measured_batches"]), **fields)


def save(path: Path, estimate: Estimate) -> None:
    """Cache an estimate (out of memory or past the time limit too; an error is measured again)."""
    if estimate.status == "error":
        return
    data = asdict(estimate)
    data.pop("cached")
    atomic_write_json(path, data)


def run_seconds(estimate: Estimate, steps_left: int) -> float | None:
    if estimate.step_ms is None or not math.isfinite(estimate.step_ms):
        return None
    return estimate.step_ms * steps_left / 1000
