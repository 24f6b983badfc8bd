"""``plan``: every run of a grid with its folder, its state, and its estimated time and memory
here."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lra_bench.benchmarking.worker import Worker, available_memory_mb
from lra_bench.report.render import MISSING, markdown_table
from lra_bench.report.show import memory_unit, time_unit
from lra_bench.runtime import device_label, resolve_device
from lra_bench.table.estimate import (
    Estimate,
    cache_path,
    from_result,
    load_cached,
    make_case,
    measure_case,
    run_seconds,
    save,
)
from lra_bench.table.grid import Grid, GridRun
from lra_bench.table.state import DONE, RunState, read_state


@dataclass
class Plan:
    """The grid's runs with their states and estimates, and how the estimate was had."""

    grid: Grid
    device: str  # the device's label (as result rows name it)
    capacity_mb: float | None  # the device's memory
    states: list[RunState] = field(default_factory=list)
    estimates: list[Estimate | None] = field(default_factory=list)
    measured: int = 0  # configs measured now
    cached: int = 0  # configs whose estimate came from the cache
    measure_s: float = 0.0


KILL_AFTER = 4  # budgets: a config whose batch-1 steps take longer is not measured
NOT_MEASURED = {
    "timeout": f"its batch-1 steps did not end within {KILL_AFTER} times the --budget",
    "oom": "out of memory at batch 1",
    "invalid": "the attention's settings do not fit this length",
}


def device_capacity_mb(device: torch.device) -> float | None:
    """Total memory of a GPU; memory available now on a CPU (what a run can have)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    return available_memory_mb()


def _stop(worker: Worker | None, interrupted: bool) -> None:
    """Close the worker; kill it at once when the plan was interrupted (it may be mid-step)."""
    if worker is None:
        return
    if interrupted and worker.proc is not None:
        worker.proc.kill()
    worker.close()


def estimates_for(
    grid: Grid,
    device: torch.device,
    label: str,
    budget_s: float,
    refresh: bool,
    plan: Plan,
    measure: bool = True,
) -> dict[str, Estimate]:
    """One estimate per distinct config (seeds aside), from the cache unless ``refresh``; without
    ``measure`` only those already cached."""
    began = time.monotonic()
    by_shape: dict[str, GridRun] = {}
    for run in grid.runs:
        by_shape.setdefault(run.shape_digest, run)
    cap = 0.8 * plan.capacity_mb if plan.capacity_mb and device.type == "cpu" else None
    found: dict[str, Estimate] = {}
    worker: Worker | None = None
    interrupted = True
    try:
        for shape, run in by_shape.items():
            path = cache_path(Path(str(run.cfg.paths.cache_dir)).expanduser(), shape, label)
            cached = None if refresh else load_cached(path)
            if cached is not None or not measure:
                plan.cached += cached is not None
                found.update({shape: cached} if cached is not None else {})
                continue
            # the worker kills a config still at batch 1 after KILL_AFTER budgets
            grace = (KILL_AFTER - 1) * budget_s
            worker = worker or Worker(run.cfg.trainer.threads, grace_s=grace, run=measure_case)
            found[shape] = measure_one(worker, run, device, budget_s, cap, path)
            plan.measured += 1
        interrupted = False
    finally:
        _stop(worker, interrupted)
    plan.measure_s = time.monotonic() - began
    return found


def measure_one(
    worker: Worker, run: GridRun, device: torch.device, budget_s: float, cap: float | None,
    path: Path,
) -> Estimate:  # fmt: skip
    """Measure one config in the worker, cache it and say on stderr what it took."""
    case = make_case(run.cfg, str(device), budget_s, cap)
    start = time.monotonic()
    print(f"measuring {run.task}/{run.attn} (micro-batch {case.batch}, {case.n} tokens) ...",
          end=" ", file=sys.stderr, flush=True)  # fmt: skip
    estimate = from_result(worker.run(case), case, time.monotonic() - start)
    how = estimate.basis() if estimate.status == "ok" else estimate.status
    print(f"{estimate.measure_s:.1f} s, {how}", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, estimate)
    return estimate


def make_plan(
    grid: Grid,
    device_name: str = "auto",
    budget_s: float = 15.0,
    refresh: bool = False,
    measure: bool = True,
) -> Plan:
    """States of every run; with ``measure``, estimates of every distinct config on the device."""
    device = resolve_device(device_name)
    threads = grid.runs[0].cfg.trainer.threads if grid.runs else None
    label = device_label(device, threads)
    plan = Plan(grid, label, device_capacity_mb(device))
    plan.states = [read_state(r.folder, r.digest, int(r.cfg.trainer.steps)) for r in grid.runs]
    found = estimates_for(grid, device, label, budget_s, refresh and measure, plan, measure)
    plan.estimates = [found.get(r.shape_digest) for r in grid.runs]
    return plan


def state_text(state: RunState, steps: int) -> str:
    if state.kind in ("stopped", "failed") and state.step:
        return f"partial at step {state.step}/{steps}" + (
            " (failed)" if state.kind == "failed" else ""
        )
    if state.kind == "running":
        return f"running, step {state.step if state.step is not None else '?'}/{steps}"
    return state.kind


def steps_left(run: GridRun, state: RunState) -> int:
    steps = int(run.cfg.trainer.steps)
    if state.kind == DONE:
        return 0
    return max(steps - (state.step or 0), 0)


def hours(seconds: float) -> str:
    unit, scale = time_unit(seconds)
    return f"{seconds * scale:.1f} {unit}"


def memory(mb: float) -> str:
    unit, scale = memory_unit(mb)
    return f"{mb * scale:.1f} {unit}"


def estimate_cells(estimate: Estimate | None, left: int, capacity: float | None) -> list[str]:
    """Time to finish and peak memory of one run ('–' without an estimate)."""
    if estimate is None:
        return [MISSING, MISSING]
    if estimate.status != "ok":
        return [estimate.status, "does not fit" if estimate.status == "oom" else MISSING]
    seconds = run_seconds(estimate, left) or 0.0
    mem = memory(estimate.peak_mb or 0.0)
    fits = capacity is None or (estimate.peak_mb or 0.0) <= capacity
    return [hours(seconds) if left else "0", mem if fits else f"{mem} (does not fit)"]


def render_plan(plan: Plan) -> str:
    """The runs' table, then the totals, memory warnings and how the estimate was made."""
    grid, rows = plan.grid, []
    total = left_total = 0.0
    unknown = 0
    too_big: list[str] = []
    for run, state, estimate in zip(grid.runs, plan.states, plan.estimates, strict=True):
        steps, left = int(run.cfg.trainer.steps), steps_left(run, state)
        basis = estimate.basis() if estimate else MISSING
        rows.append([run.task, run.attn, str(run.seed), state_text(state, steps),
                     *estimate_cells(estimate, left, plan.capacity_mb), basis,
                     str(run.folder)])  # fmt: skip
        full = run_seconds(estimate, steps) if estimate else None
        if full is None:
            unknown += 1
            continue
        total += full
        left_total += run_seconds(estimate, left) or 0.0
        if estimate and plan.capacity_mb and (estimate.peak_mb or 0) > plan.capacity_mb:
            too_big.append(
                f"{run.task}/{run.attn} seed {run.seed} ({memory(estimate.peak_mb or 0)})"
            )
    header = ["Task", "Attention", "Seed", "State", "Time to finish", "Peak memory",
              "Measured at", "Run folder"]  # fmt: skip
    lines = [f"grid {grid.name}: {len(grid.runs)} runs ({len(grid.tasks)} tasks x "
             f"{len(grid.attns)} attentions x {len(grid.seeds)} seeds) on {plan.device}", "",
             markdown_table(header, rows, label_columns=4), ""]  # fmt: skip
    counts = {
        k: sum(s.kind == k for s in plan.states) for k in dict.fromkeys(s.kind for s in plan.states)
    }
    lines.append(f"states: {', '.join(f'{n} {k}' for k, n in counts.items())}")
    if any(e is not None for e in plan.estimates):
        lines += estimate_notes(plan, total, left_total, unknown, too_big)
    return "\n".join(lines) + "\n"


def estimate_notes(
    plan: Plan, total: float, left_total: float, unknown: int, too_big: list[str]
) -> list[str]:
    """The totals, the memory warnings and how the estimates were had (none of it silent)."""
    grid = plan.grid
    left_out = f" ({unknown} runs without an estimate are not in it)" if unknown else ""
    lines = [f"total: {left_total / 3600:.2f} device-hours to finish, {total / 3600:.2f} for the "
             f"whole grid on {plan.device}{left_out}"]  # fmt: skip
    capacity = memory(plan.capacity_mb) if plan.capacity_mb else "unknown"
    lines.append(
        f"memory: {len(too_big)} runs need more than this device's {capacity}"
        + (f": {', '.join(too_big[:8])}{' …' if len(too_big) > 8 else ''}" if too_big else "")
    )
    shapes = len({r.shape_digest for r in grid.runs})
    lines.append(
        f"estimate: {shapes} distinct configs (seeds share one), {plan.measured} measured now "
        f"and {plan.cached} from the cache, in {plan.measure_s:.1f} s; training steps only "
        "(evaluation and data preparation come on top), on random full-length batches"
    )
    extrapolated = sum(bool(e and e.extrapolated) for e in plan.estimates)
    if extrapolated:
        lines.append(
            f"{extrapolated} runs' estimates are extrapolated linearly in the batch from the "
            "batches measured ('b1,2 -> 32': measured at 1 and 2, extrapolated to 32)"
        )
    failed: dict[str, list[str]] = {}
    for run, estimate in zip(grid.runs, plan.estimates, strict=True):
        if estimate is not None and estimate.status != "ok":
            failed.setdefault(estimate.status, [])
            if f"{run.task}/{run.attn}" not in failed[estimate.status]:
                failed[estimate.status].append(f"{run.task}/{run.attn}")
    for status, cells in failed.items():
        lines.append(f"not measured ({NOT_MEASURED.get(status, status)}): {', '.join(cells)}; "
                     "their runs have no estimate and are not in the total")  # fmt: skip
    return lines
