"""Interleaved timing: every variant of one length once per round (A B C A B C ...), in one process.

Time ratios taken one variant after another drift with whatever else the machine runs; within a
round the variants share the same conditions, so the ratio of their times in that round is
steady even when the times are not. ``interleave`` (run where the cases run) prepares every
case of a length, then runs rounds until, over the last ``window`` rounds, every variant's ratio
to the baseline lies within ``tolerance`` of its median, or the budget ends. ``summarise`` (in
the bench) turns the times into each row's median time and median / min / max ratio.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from lra_bench.benchmarking.measure import (
    AttentionCase,
    Case,
    prepare_attention,
    prepare_train_step,
    time_ms,
)


@dataclass(frozen=True)
class TimingGroup:
    """The cases of one length that ran, to be timed in interleaved rounds."""

    cases: tuple[Case, ...]
    baseline: str
    window: int
    tolerance: float
    budget_s: float
    max_rounds: int
    time_limit_s: float
    mem_limit_mb: float | None = None

    @property
    def label(self) -> str:
        return "interleaved rounds"

    @property
    def n(self) -> int:
        return self.cases[0].n


def primary(case: Case) -> str:
    """The operation whose ratio decides when the rounds stop."""
    return "fwdbwd" if isinstance(case, AttentionCase) else "step"


def window_ratios(times: list[float], base: list[float], window: int) -> list[float]:
    """Round-by-round ratios of the last ``window`` rounds (all of them when fewer)."""
    pairs = list(zip(times, base, strict=True))[-window:]
    return [t / b for t, b in pairs if b > 0]


def within(ratios: list[float], tolerance: float) -> bool:
    if not ratios:
        return False
    mid = statistics.median(ratios)
    return all(abs(r / mid - 1) <= tolerance for r in ratios)


def steady(times: dict[str, dict[str, list[float]]], group: TimingGroup) -> bool:
    """Every variant's primary ratio within ``tolerance`` over the last ``window`` rounds."""
    op = primary(group.cases[0])
    base = times[group.baseline][op]
    return len(base) >= group.window and all(
        within(window_ratios(t[op], base, group.window), group.tolerance) for t in times.values()
    )


def interleave(group: TimingGroup) -> dict[str, Any]:
    """Rounds of every case's timed operations; returns the times (ms) per label and operation,
    the rounds run and whether the ratios became steady before the budget ended."""
    prepare = prepare_attention if isinstance(group.cases[0], AttentionCase) else prepare_train_step
    ready = {case.label: prepare(case) for case in group.cases}  # type: ignore[arg-type]
    for prepared in ready.values():
        for fn in prepared.timed.values():
            fn()  # warm-up
    times = {label: {op: [] for op in p.timed} for label, p in ready.items()}
    start, rounds, converged = time.monotonic(), 0, False
    while rounds < group.max_rounds:
        for label, prepared in ready.items():
            for op, fn in prepared.timed.items():
                times[label][op].append(time_ms(fn, prepared.device))
        rounds += 1
        if steady(times, group):
            converged = True
            break
        if time.monotonic() - start > group.budget_s:
            break
    return {"times": times, "rounds": rounds, "converged": converged}


def summarise(result: dict[str, Any], group: TimingGroup) -> dict[str, dict[str, Any]]:
    """Per label: each operation's median time over the window and its ratio to the baseline
    (median, min and max over the window's rounds), the rounds and whether they were steady."""
    times, out = result["times"], {}
    for label, ops in times.items():
        row: dict[str, Any] = {"rounds": result["rounds"], "spread_ok": result["converged"]}
        for op, series in ops.items():
            row[f"{op}_ms"] = statistics.median(series[-group.window :])
            ratios = window_ratios(series, times[group.baseline][op], group.window)
            if ratios:
                row[f"{op}_ratio"] = round(statistics.median(ratios), 4)
                row[f"{op}_ratio_min"] = round(min(ratios), 4)
                row[f"{op}_ratio_max"] = round(max(ratios), 4)
        out[label] = row
    return out
