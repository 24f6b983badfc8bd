"""Time and peak memory of a run, estimated from a few measured training steps of its config.

The bench's ``TrainStepCase`` of the run (its model, attention, optimiser and micro-batch, on
random full-length tokens: the task's ``max_len``, or ``data.max_length`` when that caps the
generated lengths) runs in the bench's worker process under its memory cap. There the bench's
``prepare_train_step`` and ``measure`` (one warm-up step, one memory-tracked step, then up to
``repeats`` timed steps of ``step.train_step``) run at batch 1, then at 2, 4, ... up to the
run's micro-batch while the next batch still fits the config's time budget (``time_limit_s``,
counted after batch 1).
Where the micro-batch itself was not reached, its time and memory are extrapolated linearly in
the batch (through the last two measured batches, or in proportion from batch 1 alone): each
estimate says which batches were measured. A config whose steps at batch 1 do not end within
a few budgets is killed and reported as not measured (the plan names it and leaves it out of
its total). The
estimate is for the training steps only: evaluation and data preparation come on top.

The worker dies with the process that started it (``die_with_parent``), so an interrupted plan
leaves no measurement running. Results are cached as JSON per (config without its seed, device)
under ``<paths.cache_dir>/table_estimates/``.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lra_bench.benchmarking.measure import TrainStepCase
from lra_bench.io import atomic_write_json

VERSION = 4  # of the measurement: a change here invalidates the cache
CACHE_FOLDER = "table_estimates"
STATE_BYTES_PER_PARAM = 16  # fp32 weights, gradients and Adam's two moments
MIN_SCHEDULE_STEPS = 1000  # one_cycle refuses steps past its end: room for the measured ones
TIMED_STEPS = 2  # after the warm-up and the memory-tracked step
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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
    micro_batch: int = 0

    def basis(self) -> str:
        """How the figures were had: ``b1,2,4`` measured, ``-> 32`` when extrapolated."""
        if self.status != "ok":
            return "not measured"
        batches = "b" + ",".join(str(b) for b in self.measured_batches)
        return f"{batches} -> {self.micro_batch}" if self.extrapolated else batches


def step_length(cfg: DictConfig) -> int:
    """Tokens per sequence a step pays for: ``task.max_len``, capped for ListOps by
    ``data.max_length`` (the generator's bound; no other task reads it)."""
    cap = OmegaConf.select(cfg, "data.max_length", default=None)
    if cap and cfg.task.name == "listops":
        return int(min(cfg.task.max_len, cap))
    return int(cfg.task.max_len)


def make_case(
    cfg: DictConfig, device: str, budget_s: float, mem_limit_mb: float | None
) -> TrainStepCase:
    """The bench case of a run's config: its micro-batch (``trainer.batch_size // grad_accum``),
    a schedule long enough for the measured steps, ``budget_s`` seconds to measure it."""

    def plain(node: Any) -> dict[str, Any]:
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]

    trainer = plain(cfg.trainer)
    batch = max(1, int(trainer["batch_size"]) // int(trainer.get("grad_accum") or 1))
    trainer["steps"] = max(int(trainer["steps"]), MIN_SCHEDULE_STEPS)
    return TrainStepCase(
        f"{cfg.task.name}/{cfg.attn.name}", plain(cfg.attn), plain(cfg.task), plain(cfg.model),
        trainer, step_length(cfg), batch, device, warmup=1, repeats=TIMED_STEPS,
        time_limit_s=budget_s, mem_limit_mb=mem_limit_mb,
    )  # fmt: skip


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _at_batch(case: TrainStepCase, batch: int, deadline: float) -> tuple[float, float, int]:
    """(fastest timed ms, extra peak MB, parameters) of the case's training step at ``batch``."""
    from lra_bench.benchmarking.measure import measure, prepare_train_step

    ready = prepare_train_step(replace(case, batch=batch))
    got = measure(ready.timed["step"], ready.device, warmup=case.warmup, repeats=case.repeats,
                  stop_by=deadline, deadline=deadline)  # fmt: skip
    return got.min_ms, got.peak_mb, ready.params


def _line(b: int, at: tuple[int, float], through: tuple[int, float]) -> float:
    """The line through two measured (batch, value) points at batch ``b``, never below the larger
    batch's value (noise can make the smaller batch look dearer)."""
    (b1, y1), (b2, y2) = at, through
    return max(y1 + (y2 - y1) * (b - b1) / (b2 - b1), y2)


def _measured_points(case: TrainStepCase) -> list[tuple[int, float, float, int]]:
    """(batch, ms, peak MB, params) at batch 1 (the worker's limit stops it), then at 2, 4, ...
    while the next fits the budget (``time_limit_s``, counted from there)."""
    from lra_bench.benchmarking.measure import CaseTimeout

    points = [(1, *_at_batch(case, 1, math.inf))]
    deadline = time.monotonic() + case.time_limit_s
    while points[-1][0] < case.batch:
        batch = min(2 * points[-1][0], case.batch)
        # warm-up, tracked and timed steps at a batch about batch/last times dearer
        cost_s = (2 + case.repeats) * points[-1][1] / 1000 * batch / points[-1][0]
        if time.monotonic() + cost_s > deadline:
            break
        try:
            points.append((batch, *_at_batch(case, batch, deadline)))
        except CaseTimeout:
            break
    return points


def measure_case(case: TrainStepCase) -> dict[str, Any]:
    """The worker's measurement of ``case``: exact when the micro-batch was measured, else
    extrapolated to it linearly in the batch."""
    die_with_parent()
    began = time.monotonic()
    points = _measured_points(case)
    (b2, ms2, mb2, params) = points[-1]
    if b2 == case.batch or len(points) == 1:
        ms, mb = ms2 * case.batch / b2, mb2 * case.batch / b2
    else:
        b1, ms1, mb1, _ = points[-2]
        ms = _line(case.batch, (b1, ms1), (b2, ms2))
        mb = _line(case.batch, (b1, mb1), (b2, mb2))
    accum = int(case.trainer.get("grad_accum") or 1)
    return {
        "step_ms": ms * accum,
        "peak_mb": mb + params * STATE_BYTES_PER_PARAM / 2**20,
        "measured_batches": [p[0] for p in points],
        "extrapolated": b2 != case.batch,
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
        estimate = Estimate(**{**data, "cached": True})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return None if estimate.status in ("error", "timeout") else estimate  # measured again


def from_result(result: dict[str, Any], case: TrainStepCase, measure_s: float) -> Estimate:
    """An Estimate from the worker's result for ``case`` (its status, or the measured figures)."""
    if result.get("status") != "ok":
        error = str(result.get("error", ""))[:300]
        return Estimate(str(result.get("status", "error")), error=error, measure_s=measure_s,
                        micro_batch=case.batch)  # fmt: skip
    fields = {k: result[k] for k in ("step_ms", "peak_mb", "extrapolated")}
    batches = tuple(result["measured_batches"])
    return Estimate("ok", measured_batches=batches, measure_s=measure_s, micro_batch=case.batch,
                    **fields)  # fmt: skip


def save(path: Path, estimate: Estimate) -> None:
    """Cache an estimate (out of memory too); an error or a timeout (a busy machine may have
    caused it) is measured again next time."""
    if estimate.status in ("error", "timeout"):
        return
    data = asdict(estimate)
    data.pop("cached")
    atomic_write_json(path, data)


def run_seconds(estimate: Estimate, steps_left: int) -> float | None:
    if estimate.step_ms is None or not math.isfinite(estimate.step_ms):
        return None
    return estimate.step_ms * steps_left / 1000
