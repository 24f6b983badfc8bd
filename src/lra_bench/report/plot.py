"""``plot``: the LRA-style chart (speed vs average accuracy, marker area = peak memory)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lra_bench.report import ReportError
from lra_bench.report.load import Record
from lra_bench.report.stats import (
    BASELINE,
    TASKS,
    Group,
    accuracy,
    attns_of,
    average,
    cell,
    comparable_times,
    geomean,
    group_records,
    has_acc,
    has_time,
    tasks_of,
)

INSTALL_HINT = (
    "plot needs matplotlib, which this installation lacks: "
    "pip install -e . (or pip install matplotlib)"
)


@dataclass(frozen=True)
class Point:
    attn: str
    speed: float  # softmax time / attention time (geometric mean over tasks)
    acc: float  # LRA average accuracy (%)
    partial: bool  # average over fewer than the five tasks
    mem_mb: float | None  # mean peak memory over the tasks timed


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)


@dataclass
class PlotData:
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def accuracy_rows(
    group: Group, rows: list[Record], groups: dict[Group, list[Record]], acc_source: str | None
) -> tuple[Group | None, list[Record]]:
    """Where the accuracies of a timed group come from: itself, or the one accuracy-only group."""
    if any(has_acc(r) for r in rows) and acc_source in (None, group.source):
        return group, rows
    candidates = [
        g
        for g, rs in groups.items()
        if any(has_acc(r) for r in rs)
        and not any(has_time(r) for r in rs)
        and acc_source in (None, g.source)
    ]
    if len(candidates) > 1:
        names = ", ".join(sorted({g.source for g in candidates}))
        raise ReportError(
            f"accuracies for {group.label()} could come from several sources ({names}); choose one "
            "with --acc-source"
        )
    return (candidates[0], groups[candidates[0]]) if candidates else (None, [])


def plot_data(records: list[Record], acc_source: str | None = None) -> PlotData:
    """Points per timed group: speed relative to softmax, average accuracy, peak memory."""
    groups = group_records(records)
    data = PlotData()
    timed_attns: set[str] = set()
    for group, rows in groups.items():
        timed = [r for r in rows if has_time(r)]
        if not timed:
            continue
        if not any(r.attn == BASELINE for r in timed):
            data.notes.append(
                f"{group.label()}: no {BASELINE} times to measure speed against; left out."
            )
            continue
        acc_group, acc_rows = accuracy_rows(group, rows, groups, acc_source)
        if acc_group is None:
            data.notes.append(f"{group.label()}: no accuracies to pair with its times; left out.")
            continue
        label = group.label() + (
            "" if acc_group == group else f"; accuracy from {acc_group.source}"
        )
        series = Series(label)
        for attn in attns_of(timed):
            timed_attns.add(attn)
            point = make_point(timed, acc_rows, attn)
            if isinstance(point, str):
                data.notes.append(f"{attn} ({group.source}): {point}; left out.")
            else:
                series.points.append(point)
        if series.points:
            data.series.append(series)
    untimed = [a for a in attns_of(r for r in records if has_acc(r)) if a not in timed_attns]
    if untimed:
        data.notes.append(f"no time/memory figures, not plotted: {', '.join(untimed)}.")
    return data


def make_point(timed: list[Record], acc_rows: list[Record], attn: str) -> Point | str:
    """The attention's point, or why it has none."""
    speeds = []
    mems = []
    for task in tasks_of(timed):
        pair = comparable_times(timed, timed, task, BASELINE, attn)
        if pair is not None and pair[2].mean > 0:
            speeds.append(pair[1].mean / pair[2].mean)
            mem = cell(timed, task, attn, "peak_mem_mb")
            if mem is not None:
                mems.append(mem.mean)
    speed = geomean(speeds)
    if speed is None:
        return f"no task timed for both it and {BASELINE}"
    avg = average({t: accuracy(acc_rows, t, attn) for t in TASKS}, TASKS)
    if avg is None:
        return "no accuracy"
    return Point(attn, speed, avg.value, avg.partial, statistics.fmean(mems) if mems else None)


def draw(data: PlotData, out: str | Path, title: str | None = None) -> Path:
    """Write the chart to ``out`` (format from its suffix); matplotlib is imported here only."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(INSTALL_HINT) from None
    points = [p for s in data.series for p in s.points]
    if not points:
        raise ReportError(
            "nothing to plot: no attention has both accuracies and times (with a softmax baseline)"
        )
    fig = Figure(figsize=(8, 5.5), dpi=150)
    ax = fig.add_subplot()
    handles = _draw_points(ax, data.series, points)
    ax.axvline(1.0, color="grey", ls=":", lw=1, zorder=1)
    ax.margins(x=0.3, y=0.35)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(f"speed relative to {BASELINE} (×, geometric mean over tasks; right = faster)")
    ax.set_ylabel("LRA average test accuracy (%)")
    ax.set_title(title or "Accuracy, speed and memory (marker area ∝ peak memory)")
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.8)
    notes = [
        "marker area ∝ peak memory (mean over the tasks timed); labels: attention, mean peak "
        "memory.",
        *data.notes,
    ]
    if any(p.partial for p in points):
        notes.append("* average over the tasks with results only (fewer than five).")
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=6.5, va="bottom", ha="left", wrap=True)
        fig.subplots_adjust(bottom=0.14 + 0.028 * len(notes))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    except (OSError, ValueError) as err:
        raise ReportError(
            f"{out}: cannot write the chart: {getattr(err, 'strerror', None) or err}"
        ) from None
    return out


def _draw_points(ax: Any, series: Sequence[Series], points: Sequence[Point]) -> list[Any]:
    """One labelled marker per point (area from its peak memory); the legend handle per series."""
    from matplotlib.lines import Line2D

    max_mem = max((p.mem_mb for p in points if p.mem_mb), default=None)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    handles = []
    placed: list[tuple[float, float]] = []
    span_x = (max(p.speed for p in points) - min(p.speed for p in points)) or 1.0
    span_y = (max(p.acc for p in points) - min(p.acc for p in points)) or 1.0
    for i, one in enumerate(series):
        colour = colours[i % len(colours)]
        for p in one.points:
            area = 80 + 2200 * (p.mem_mb / max_mem) if p.mem_mb and max_mem else 80
            ax.scatter(
                [p.speed],
                [p.acc],
                s=area,
                color=colour,
                alpha=0.45,
                edgecolors="black",
                linewidths=0.8,
                zorder=3,
            )
            radius = (area / 3.14159) ** 0.5  # points
            # labels of points that (nearly) coincide are stacked instead of overprinted
            near = sum(
                abs(x - p.speed) < 0.05 * span_x and abs(y - p.acc) < 0.05 * span_y
                for x, y in placed
            )
            placed.append((p.speed, p.acc))
            ax.annotate(
                f"{p.attn}{'*' if p.partial else ''}\n{_memory_label(p.mem_mb)}",
                (p.speed, p.acc),
                textcoords="offset points",
                xytext=(radius + 4, -24 * near),
                ha="left",
                va="center",
                fontsize=8,
                color=_darker(colour),
                zorder=4,
            )
        handles.append(Line2D([], [], marker="o", ls="", color=colour, alpha=0.6, label=one.label))
    return handles


def _memory_label(mem_mb: float | None) -> str:
    """Peak memory as a label: MiB below 1 GiB, else GiB; n/a when not measured."""
    if mem_mb is None:
        return "memory n/a"
    return f"{mem_mb / 1024:.1f} GiB" if mem_mb >= 1024 else f"{mem_mb:.0f} MiB"


def _darker(colour: str) -> tuple[float, float, float]:
    """The series colour, darkened so that label text stays readable."""
    from matplotlib.colors import to_rgb

    return tuple(0.6 * c for c in to_rgb(colour))
