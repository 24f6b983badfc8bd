"""``show``: accuracy and efficiency tables, one set per (source, device, precision) group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lra_bench.report.load import Record
from lra_bench.report.render import MISSING, Table, fmt
from lra_bench.report.stats import (
    BASELINE,
    SOURCE_NOTES,
    TASK_TITLES,
    TASKS,
    Group,
    Stat,
    accuracy,
    attns_of,
    average,
    cell,
    duplicate_seeds,
    group_records,
    rounded,
    tasks_of,
)


def acc_text(stat: Stat | None) -> str:
    """'40.00 ± 10.00 (n=3)', '61.95 (n=1)' or the missing mark."""
    if stat is None:
        return MISSING
    spread = f" ± {stat.std:.2f}" if stat.std is not None else ""
    return f"{stat.mean:.2f}{spread} (n={stat.n})"


def group_fields(group: Group) -> dict[str, Any]:
    return {
        "source": group.source,
        "device": group.device,
        "precision": group.precision,
        "parity": group.parity,
        "protocol": group.protocol,
    }


PARITY_NOTES = {
    "skyformer_code": (
        "parity skyformer_code: attentions as pkuzengqi/Skyformer computes them, "
        "quirks included (docs/fidelity.md)"
    ),
    "lra_code": (
        "parity lra_code: attentions as google-research/long-range-arena computes them "
        "(docs/fidelity.md)"
    ),
}


def source_notes(group: Group) -> list[str]:
    note = SOURCE_NOTES.get(group.source)
    notes = [f"{note}; n counts rows."] if note else []
    if group.parity in PARITY_NOTES:
        notes.append(f"{PARITY_NOTES[group.parity]}.")
    return notes


def accuracy_table(group: Group, records: list[Record], tasks: list[str]) -> Table | None:
    """Test accuracy (%) per attention and task, with the LRA average; None without accuracies."""
    recs = [r for r in records if r.values["test_acc"] is not None]
    if not recs:
        return None
    avg_over = [t for t in TASKS if t in tasks]
    table = Table(
        title=f"Test accuracy (%), {group.label()}",
        header=["Attention", *(TASK_TITLES.get(t, t) for t in tasks), "Avg"],
    )
    partial = False
    for attn in attns_of(recs):
        cells = {t: accuracy(recs, t, attn) for t in tasks}
        avg = average(cells, avg_over)
        partial |= bool(avg and avg.partial)
        avg_text = MISSING if avg is None else f"{avg.value:.2f}" + ("*" if avg.partial else "")
        table.rows.append([attn, *(acc_text(cells[t]) for t in tasks), avg_text])
        for t in tasks:
            s = cells[t]
            table.records.append(
                {
                    "table": "accuracy",
                    **group_fields(group),
                    "attn": attn,
                    "task": t,
                    "mean": rounded(s and s.mean),
                    "std": rounded(s and s.std),
                    "n": s.n if s else 0,
                    "unit": "%",
                }
            )
        table.records.append(
            {
                "table": "accuracy",
                **group_fields(group),
                "attn": attn,
                "task": "avg",
                "mean": rounded(avg and avg.value),
                "std": None,
                "n": avg.tasks if avg else 0,
                "unit": "%",
                "partial": bool(avg and avg.partial),
            }
        )
    table.notes.append("mean ± sample std over seeds (n rows); – = no result.")
    if avg_over != list(TASKS):
        table.notes.append(
            f"Avg over the tasks shown ({', '.join(avg_over) or 'none'}), not all five."
        )
    if partial:
        table.notes.append(
            "* partial: mean over the tasks with results only, not comparable with a "
            f"{len(avg_over)}-task average."
        )
    table.notes.extend(source_notes(group))
    return table


def time_unit(max_s: float) -> tuple[str, float]:
    if max_s >= 3600:
        return "h", 1 / 3600
    if max_s >= 120:
        return "min", 1 / 60
    return "s", 1.0


def memory_unit(max_mb: float) -> tuple[str, float]:
    return ("GiB", 1 / 1024) if max_mb >= 1024 else ("MiB", 1.0)


# column, title, unit chooser (from the largest value), records' unit name
EFFICIENCY: list[tuple[str, str, Callable[[float], tuple[str, float]], str]] = [
    ("train_s", "Train time", time_unit, "s"),
    ("step_ms", "Step time", lambda _: ("ms", 1.0), "ms"),
    ("peak_mem_mb", "Peak memory", memory_unit, "MiB"),
]


def efficiency_tables(group: Group, records: list[Record], tasks: list[str]) -> list[Table]:
    """One table per measure the group has: absolute value and ratio to softmax, per task."""
    tables = []
    for column, title, choose_unit, raw_unit in EFFICIENCY:
        recs = [r for r in records if r.values[column] is not None]
        if not recs:
            continue
        unit, scale = choose_unit(max(r.values[column] for r in recs))
        table = Table(
            title=f"{title} ({unit}, ratio to {BASELINE}), {group.label()}",
            header=["Attention", *(TASK_TITLES.get(t, t) for t in tasks)],
        )
        base = {t: cell(recs, t, BASELINE, column) for t in tasks}
        for attn in attns_of(recs):
            row = [attn]
            for t in tasks:
                s = cell(recs, t, attn, column)
                ratio = s.mean / base[t].mean if s and base[t] and base[t].mean > 0 else None
                text = (
                    MISSING
                    if s is None
                    else fmt(s.mean * scale) + (f" ({ratio:.2f}×)" if ratio is not None else "")
                )
                row.append(text)
                table.records.append(
                    {
                        "table": column,
                        **group_fields(group),
                        "attn": attn,
                        "task": t,
                        "mean": rounded(s and s.mean),
                        "std": rounded(s and s.std),
                        "n": s.n if s else 0,
                        "unit": raw_unit,
                        "ratio_to_softmax": rounded(ratio),
                    }
                )
            table.rows.append(row)
        if any(b is not None for b in base.values()):
            table.notes.append(
                f"(×) = mean / {BASELINE} mean, same group and task; below 1 = less."
            )
        else:
            table.notes.append(f"no {BASELINE} rows in this group, so no ratios.")
        table.notes.extend(source_notes(group))
        tables.append(table)
    return tables


def columns(records: list[Record], tasks: list[str] | None = None) -> list[str]:
    """The tasks asked for, else the five LRA tasks and any other task in the records."""
    return list(tasks) if tasks else [*TASKS, *(t for t in tasks_of(records) if t not in TASKS)]


def show_tables(records: list[Record], tasks: list[str] | None = None) -> list[Table]:
    """Accuracy tables first, then efficiency tables, for every group in the records."""
    tasks = columns(records, tasks)
    groups = group_records(records)
    acc: list[Table] = []
    eff: list[Table] = []
    for group, recs in groups.items():
        table = accuracy_table(group, recs, tasks)
        if table is not None:
            acc.append(table)
        eff.extend(efficiency_tables(group, recs, tasks))
    dups = duplicate_seeds(records)
    if dups and (acc or eff):
        (acc or eff)[0].notes.append("repeated seeds (each row counted): " + "; ".join(dups))
    return acc + eff
