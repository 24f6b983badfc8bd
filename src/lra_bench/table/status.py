"""``status``: one line per cell of the table (task x attention, its seeds together).

A cell lists its seeds by state: done (with the mean ± std test accuracy of the done ones),
running (step/steps, last dev accuracy, ETA, host:PID), stopped (last checkpoint step), failed
(the run's one-line error) and not started.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from lra_bench.table.grid import Grid, GridRun
from lra_bench.table.state import (
    DONE,
    FAILED,
    NOT_STARTED,
    RUNNING,
    STALE,
    STOPPED,
    RunState,
    read_state,
)

ORDER = (DONE, RUNNING, STOPPED, FAILED, STALE, NOT_STARTED)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def accuracy_text(accs: list[float]) -> str:
    """Test accuracy in percent: mean ± sample std (the std once two seeds are done)."""
    if not accs:
        return ""
    mean = 100 * statistics.fmean(accs)
    return f"{mean:.2f} ± {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else f"{mean:.2f}"


def run_text(run: GridRun, state: RunState) -> str:
    """One seed's part of its cell's line (running, stopped and failed seeds)."""
    steps = int(run.cfg.trainer.steps)
    if state.kind == RUNNING:
        parts = [f"step {state.step if state.step is not None else '?'}/{steps}"]
        if state.val_acc is not None:
            parts.append(f"dev {100 * state.val_acc:.2f}")
        if state.eta_s is not None:
            parts.append(f"ETA {duration(state.eta_s)}")
        parts.append(str(state.holder))
        return f"seed {run.seed} running ({', '.join(parts)})"
    if state.kind == STOPPED:
        return f"seed {run.seed} stopped at step {state.step}/{steps}"
    if state.kind == FAILED:
        at = f" at step {state.step}" if state.step else ""
        return f"seed {run.seed} failed{at}: {state.error}"
    return f"seed {run.seed} {state.kind}: {state.error}"


def cell_line(runs: list[GridRun], states: list[RunState]) -> str:
    """``listops/softmax: done 2/3 (37.10 ± 0.40); seed 2 running (step 800/5000, ...)``."""
    first = runs[0]
    counts = {kind: [s for s in states if s.kind == kind] for kind in ORDER}
    done = counts[DONE]
    parts = [
        f"done {len(done)}/{len(runs)}"
        + (
            f" ({accuracy_text([s.test_acc for s in done if s.test_acc is not None])})"
            if done
            else ""
        )
    ]
    for run, state in zip(runs, states, strict=True):
        if state.kind in (RUNNING, STOPPED, FAILED, STALE):
            parts.append(run_text(run, state))
    missing = [str(r.seed) for r, s in zip(runs, states, strict=True) if s.kind == NOT_STARTED]
    if missing:
        parts.append(f"not started: seed{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return f"{first.task}/{first.attn}: " + "; ".join(parts)


def status_lines(grid: Grid) -> list[str]:
    """The table's cells in grid order, then a total per state."""
    states = [read_state(r.folder, r.digest, int(r.cfg.trainer.steps)) for r in grid.runs]
    cells: dict[tuple[str, str], list[int]] = {}
    for i, run in enumerate(grid.runs):
        cells.setdefault(run.cell, []).append(i)
    lines = [
        cell_line([grid.runs[i] for i in idx], [states[i] for i in idx]) for idx in cells.values()
    ]
    totals = [
        f"{sum(s.kind == k for s in states)} {k}" for k in ORDER if any(s.kind == k for s in states)
    ]
    lines.append(f"{grid.name}: {len(grid.runs)} runs: {', '.join(totals)}")
    return lines


def watch(grid: Grid, every: float | None, out: Callable[[str], None] = sys.stdout.write) -> int:
    """Print the status once, or every ``every`` seconds until interrupted (Ctrl-C ends it,
    status 0)."""
    try:
        while True:
            stamp = time.strftime("%H:%M:%S")
            out(
                ("\n" if every else "")
                + (f"[{stamp}]\n" if every else "")
                + "\n".join(status_lines(grid))
                + "\n"
            )
            if not every:
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
