"""``compare``: per (task, attention) accuracy deltas and time/memory ratios of two leaderboards."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lra_bench.report import ReportError
from lra_bench.report.load import Record
from lra_bench.report.render import MISSING, Table
from lra_bench.report.show import acc_text
from lra_bench.report.stats import (
    TASK_TITLES,
    Stat,
    accuracy,
    attns_of,
    cell,
    comparable_times,
    group_records,
    has_acc,
    has_mem,
    has_time,
    rounded,
    tasks_of,
)
from lra_bench.results import LABEL_COLUMNS

REFUSED_MARK = "†"


@dataclass
class Side:
    """One leaderboard of the comparison: a name for messages and its (filtered) records."""

    name: str
    option: str  # "base" or "new", for the hint naming the filter options
    records: list[Record]


@dataclass
class Comparison:
    table: Table
    deltas: list[tuple[str, str, float]] = field(default_factory=list)  # (task, attn, points)
    warnings: list[str] = field(
        default_factory=list
    )  # one line per kind of mismatch (parity, protocol)


def mismatches(base: Side, new: Side, keys: set[tuple[str, str]]) -> list[str]:
    """One warning per label (parity, protocol) whose
    values differ between the sides on common pairs."""
    lines = []
    for label in LABEL_COLUMNS:
        differ = []
        for key in sorted(keys):
            values = [
                {getattr(r, label) for r in side.records if (r.task, r.attn) == key}
                for side in (base, new)
            ]
            if values[0] != values[1]:
                differ.append((key, values))
        if differ:
            (task, attn), (vb, vn) = differ[0]
            lines.append(
                f"{label} differs on {len(differ)} (task, attention) pair(s), e.g. {task}/{attn}: "
                f"{base.name} has {', '.join(sorted(vb))}, {new.name} has {', '.join(sorted(vn))}; "
                f"run with {label}={','.join(sorted(vb))} to compare like with like"
            )
    return lines


def pick(
    side: Side, task: str, attn: str, wanted: Callable[[Record], bool], what: str
) -> list[Record]:
    """The rows of one group holding ``what`` for (task, attn); several groups is an error."""
    rows = [r for r in side.records if r.task == task and r.attn == attn and wanted(r)]
    groups = group_records(rows)
    if len(groups) > 1:
        labels = "; ".join(g.label() for g in groups)
        raise ReportError(
            f"{side.name}: {task}/{attn} has {what} from several groups ({labels}); "
            f"keep one with --{side.option}-device, --{side.option}-precision or "
            f"--{side.option}-source"
        )
    return rows


def spread(a: Stat | None, b: Stat | None) -> float | None:
    stds = [s.std for s in (a, b) if s is not None and s.std is not None]
    return max(stds) if stds else None


def time_ratio(
    base: list[Record], new: list[Record], task: str, attn: str
) -> tuple[str, float] | None:
    """(measure, new time / base time) on the first measure both sides have."""
    pair = comparable_times(base, new, task, attn, attn)
    return (pair[0], pair[2].mean / pair[1].mean) if pair and pair[1].mean > 0 else None


@dataclass
class PairFigures:
    """One (task, attention) on both sides: accuracies, their difference, time and memory ratios."""

    acc_b: Stat | None
    acc_n: Stat | None
    delta: float | None  # new - base mean accuracy, points
    spread: float | None  # the larger sample std of the two
    beyond: bool | None  # |delta| > spread (None when no side has a std)
    timing: tuple[str, float] | None  # (measure, new / base)
    mem: float | None  # new / base peak memory
    refused: str | None = None  # why time and memory were not compared (unlike setups)


def measure_pair(base: Side, new: Side, task: str, attn: str) -> PairFigures:
    acc_b = accuracy(pick(base, task, attn, has_acc, "accuracies"), task, attn)
    acc_n = accuracy(pick(new, task, attn, has_acc, "accuracies"), task, attn)
    delta = acc_n.mean - acc_b.mean if acc_b and acc_n else None
    sp = spread(acc_b, acc_n)
    beyond = None if delta is None or sp is None else abs(delta) > sp
    times_b = pick(base, task, attn, has_time, "times")
    times_n = pick(new, task, attn, has_time, "times")
    mems_b = pick(base, task, attn, has_mem, "memory figures")
    mems_n = pick(new, task, attn, has_mem, "memory figures")
    refused = unlike_setups(times_b + mems_b, times_n + mems_n)
    if refused:
        return PairFigures(acc_b, acc_n, delta, sp, beyond, None, None, refused)
    timing = time_ratio(times_b, times_n, task, attn)
    mem_b = cell(mems_b, task, attn, "peak_mem_mb")
    mem_n = cell(mems_n, task, attn, "peak_mem_mb")
    mem = mem_n.mean / mem_b.mean if mem_b and mem_n and mem_b.mean > 0 else None
    return PairFigures(acc_b, acc_n, delta, sp, beyond, timing, mem)


def device_kind(device: str) -> str:
    """The kind of device a label names: ``cpu`` for any CPU, else the GPU model without vendor
    words, memory variant or rank count (``Tesla V100-SXM2-16GB`` and ``V100x4`` -> ``v100``)."""
    name = re.sub(r"x\d+$", "", device.strip()).lower()
    if not name or name.startswith("cpu"):
        return name[:3]
    words = [w for w in re.split(r"\s+", name) if w not in ("nvidia", "tesla", "geforce", "amd")]
    return " ".join(words).split("-")[0]


def unlike_setups(base: list[Record], new: list[Record]) -> str | None:
    """Why time and memory of these rows cannot be set against each other (different device kinds
    or batch sizes), else None. A side without such rows has nothing to refuse."""
    if not base or not new:
        return None
    kinds = [sorted({device_kind(r.device) or "not stated" for r in rows}) for rows in (base, new)]
    if kinds[0] != kinds[1]:
        return f"devices {', '.join(kinds[0])} against {', '.join(kinds[1])}"
    batches = [{r.get("batch_size") for r in rows} - {None} for rows in (base, new)]
    if batches[0] and batches[1] and batches[0] != batches[1]:
        shown = [", ".join(f"{b:g}" for b in sorted(side)) for side in batches]
        return f"batch {shown[0]} against {shown[1]}"
    return None


def pair_cells(task: str, attn: str, f: PairFigures) -> list[str]:
    """The table row of one (task, attention)."""
    return [
        TASK_TITLES.get(task, task),
        attn,
        acc_text(f.acc_b),
        acc_text(f.acc_n),
        MISSING if f.delta is None else f"{f.delta:+.2f}",
        MISSING
        if f.delta is None
        else ("n/a" if f.beyond is None else ("yes" if f.beyond else "no")),
        MISSING + REFUSED_MARK if f.refused
        else MISSING if f.timing is None else f"{f.timing[1]:.2f}× ({f.timing[0]})",
        MISSING + REFUSED_MARK if f.refused else MISSING if f.mem is None else f"{f.mem:.2f}×",
    ]  # fmt: skip


def pair_record(task: str, attn: str, f: PairFigures) -> dict[str, Any]:
    """The CSV/JSON record of one (task, attention)."""
    acc_b, acc_n, timing = f.acc_b, f.acc_n, f.timing
    return {
        "task": task, "attn": attn,
        "base_mean": rounded(acc_b and acc_b.mean), "base_std": rounded(acc_b and acc_b.std),
        "base_n": acc_b.n if acc_b else 0,
        "new_mean": rounded(acc_n and acc_n.mean), "new_std": rounded(acc_n and acc_n.std),
        "new_n": acc_n.n if acc_n else 0,
        "delta": rounded(f.delta), "spread": rounded(f.spread), "beyond_spread": f.beyond,
        "time_measure": timing[0] if timing else None, "not_compared": f.refused,
        "time_ratio": rounded(timing and timing[1]), "mem_ratio": rounded(f.mem),
    }  # fmt: skip


def compare(base: Side, new: Side) -> Comparison:
    """One row per (task, attention) present in both sides; notes name what only one side has."""
    both = base.records + new.records
    table = Table(
        title=f"{new.name} against {base.name}",
        header=[
            "Task",
            "Attention",
            "Base acc (%)",
            "New acc (%)",
            "Δ (pts)",
            "Beyond spread",
            "Time new/base",
            "Memory new/base",
        ],
        label_columns=2,
    )
    result = Comparison(table)
    refused: list[str] = []
    keys_b = {(r.task, r.attn) for r in base.records}
    keys_n = {(r.task, r.attn) for r in new.records}
    for task in tasks_of(both):
        for attn in attns_of(r for r in both if r.task == task):
            if (task, attn) not in keys_b or (task, attn) not in keys_n:
                continue
            figures = measure_pair(base, new, task, attn)
            if figures.delta is not None:
                result.deltas.append((task, attn, figures.delta))
            table.rows.append(pair_cells(task, attn, figures))
            table.records.append(pair_record(task, attn, figures))
            if figures.refused:
                refused.append(f"{task}/{attn} ({figures.refused})")
    if not table.rows:
        raise ReportError(f"{base.name} and {new.name} have no (task, attention) in common")
    result.warnings = mismatches(base, new, keys_b & keys_n)
    table.notes += [
        f"base: {base.name} ({groups_used(base)}).",
        f"new: {new.name} ({groups_used(new)}).",
        *unmatched("only in base", keys_b - keys_n, both),
        *unmatched("only in new", keys_n - keys_b, both),
        "Δ = new − base mean accuracy in points; beyond spread: |Δ| > the larger sample std of the "
        "two (n/a when neither side has two seeds).",
        "time: step_ms where both sides have it, else train_s per step, else train_s; ratios below "
        "1 = new is faster / smaller.",
    ]
    if refused:
        table.notes.append(
            f"{REFUSED_MARK} time and memory not compared across device kinds or batch sizes: "
            + "; ".join(refused) + "."
        )  # fmt: skip
    return result


def groups_used(side: Side) -> str:
    return "; ".join(g.label() for g in group_records(side.records)) or "no rows"


def unmatched(
    what: str, keys: set[tuple[str, str]], records: list[Record], shown: int = 8
) -> list[str]:
    """A note listing (task, attention) pairs that one side lacks; empty when none."""
    if not keys:
        return []
    order = [(t, a) for t in tasks_of(records) for a in attns_of(records) if (t, a) in keys]
    names = [f"{t}/{a}" for t, a in order]
    more = f", … ({len(names) - shown} more)" if len(names) > shown else ""
    return [f"{what} ({len(names)}): {', '.join(names[:shown])}{more}."]
