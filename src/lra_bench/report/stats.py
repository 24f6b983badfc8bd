"""Seed aggregation, grouping and the per-cell measures that the reports share."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from lra_bench.report.load import Record
from lra_bench.results import COLUMN_DEFAULTS, LABEL_COLUMNS

# LRA tasks in the LRA paper's column order, with their display names.
TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
TASK_TITLES = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retrieval",
    "image": "Image",
    "pathfinder": "Pathfinder",
}
BASELINE = "softmax"

# What published sources are; their rows carry the paper's figures (one row per cell).
SOURCE_NOTES = {
    "skyformer_paper_table1": (
        "Skyformer paper (Chen et al., NeurIPS 2021), Table 1: each cell is "
        "the paper's mean of 3 seeds"
    ),
    "skyformer_paper_table2": (
        "Skyformer paper, Table 2: one V100, 50k training steps; time and peak memory as published"
    ),
    "lra_paper_table1": "LRA paper (Tay et al., ICLR 2021), Table 1: test accuracy as published",
}


@dataclass(frozen=True, order=True)
class Group:
    """Rows that may be aggregated together: same source, device, precision, parity and protocol."""

    source: str
    device: str
    precision: str
    parity: str = COLUMN_DEFAULTS["parity"]
    protocol: str = COLUMN_DEFAULTS["protocol"]

    @classmethod
    def of(cls, rec: Record) -> Group:
        return cls(rec.source, rec.device, rec.precision, rec.parity, rec.protocol)

    def label(self) -> str:
        parts = [f"source {self.source or '–'}"]
        parts.append(f"device {self.device}" if self.device else "device not stated")
        if self.precision:
            parts.append(f"precision {self.precision}")
        for name in LABEL_COLUMNS:  # stated when not the default
            if getattr(self, name) != COLUMN_DEFAULTS[name]:
                parts.append(f"{name} {getattr(self, name)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None below two values) and count."""

    mean: float
    std: float | None
    n: int


def summarize(values: Iterable[float]) -> Stat | None:
    vals = list(values)
    if not vals:
        return None
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return Stat(statistics.fmean(vals), std, len(vals))


def group_records(records: Iterable[Record]) -> dict[Group, list[Record]]:
    """Records by group, groups and rows in order of first appearance."""
    groups: dict[Group, list[Record]] = {}
    for rec in records:
        groups.setdefault(Group.of(rec), []).append(rec)
    return groups


def ordered(names: Iterable[str], first: tuple[str, ...] = ()) -> list[str]:
    """Unique names: those in ``first`` (in that order), then the others as they appear."""
    seen = list(dict.fromkeys(names))
    return [n for n in first if n in seen] + [n for n in seen if n not in first]


def tasks_of(records: Iterable[Record]) -> list[str]:
    return ordered((r.task for r in records), TASKS)


def attns_of(records: Iterable[Record]) -> list[str]:
    return ordered(r.attn for r in records)


def cell(
    records: Iterable[Record], task: str, attn: str, column: str, scale: float = 1.0
) -> Stat | None:
    """Aggregate of ``column`` (times ``scale``) over the rows of one (task, attention)."""
    return summarize(
        r.values[column] * scale
        for r in records
        if r.task == task and r.attn == attn and r.values.get(column) is not None
    )


def accuracy(records: Iterable[Record], task: str, attn: str) -> Stat | None:
    """Test accuracy in percent."""
    return cell(records, task, attn, "test_acc", 100.0)


@dataclass(frozen=True)
class Average:
    """Mean of per-task means; ``partial`` when some of the tasks averaged over lack results."""

    value: float
    partial: bool
    tasks: int


def average(cells: dict[str, Stat | None], over: Iterable[str]) -> Average | None:
    over = list(over)
    means = [cells[t].mean for t in over if cells.get(t) is not None]
    if not means:
        return None
    return Average(statistics.fmean(means), len(means) < len(over), len(means))


def has_acc(r: Record) -> bool:
    return r.values["test_acc"] is not None


def has_time(r: Record) -> bool:
    return r.values["step_ms"] is not None or r.values["train_s"] is not None


def has_mem(r: Record) -> bool:
    return r.values["peak_mem_mb"] is not None


def step_time(records: Iterable[Record], task: str, attn: str, kind: str) -> Stat | None:
    """Time per step in ms: ``step_ms`` as recorded,
    or ``train_s`` / ``steps``; ``train_s`` in s."""
    recs = [r for r in records if r.task == task and r.attn == attn]
    if kind == "step_ms":
        return summarize(r.values["step_ms"] for r in recs if r.values["step_ms"] is not None)
    if kind == "train_s/step":
        return summarize(
            1000.0 * r.values["train_s"] / r.values["steps"]
            for r in recs
            if r.values["train_s"] is not None and r.values["steps"]
        )
    return summarize(r.values["train_s"] for r in recs if r.values["train_s"] is not None)


TIME_KINDS = ("step_ms", "train_s/step", "train_s")


def comparable_times(
    a: Iterable[Record], b: Iterable[Record], task: str, attn_a: str, attn_b: str
) -> tuple[str, Stat, Stat] | None:
    """The first time measure both sides have: (kind, a, b), or None."""
    a, b = list(a), list(b)
    for kind in TIME_KINDS:
        sa, sb = step_time(a, task, attn_a, kind), step_time(b, task, attn_b, kind)
        if sa is not None and sb is not None:
            return kind, sa, sb
    return None


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in vals)) if vals else None


def duplicate_seeds(records: Iterable[Record]) -> list[str]:
    """'task/attn seed s ×k' for seeds recorded more than once in the same group."""
    counts: dict[tuple[Group, str, str, float], int] = {}
    for r in records:
        if r.values["seed"] is not None:
            key = (Group.of(r), r.task, r.attn, r.values["seed"])
            counts[key] = counts.get(key, 0) + 1
    return [f"{t}/{a} seed {s:g} ×{k}" for (_, t, a, s), k in counts.items() if k > 1]


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded for CSV/JSON output; None stays None."""
    return None if value is None else round(value, digits)
