"""``report``: the grid's table as the paper prints it, our seeds beside the published figures.

Our numbers are the leaderboard rows of the grid's runs (``paths.leaderboard``; a run's row is
the one with its config hash, the last when it was appended twice), aggregated over seeds with
``lra_bench.report.stats``. The accuracy table has the attentions as rows and the tasks plus
the average as columns; each cell is our mean ± sample std, the published figure and the
difference, marked when the published figure lies outside our mean ± std. The efficiency
tables (time, memory, ratio to softmax) are ``leaderboard show``'s, from our rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lra_bench.errors import ReportError
from lra_bench.paths import conf_dir
from lra_bench.report.load import Record, load_csv
from lra_bench.report.render import MISSING, Table, render
from lra_bench.report.show import efficiency_tables
from lra_bench.report.stats import (
    TASK_TITLES,
    TASKS,
    Stat,
    accuracy,
    average,
    group_records,
    rounded,
)
from lra_bench.table.grid import Grid

# the published table each paper preset reproduces (a source of results/published/*.csv)
PUBLISHED_OF = {
    "skyformer_table1": "skyformer_paper_table1",
    "lra_table1": "lra_paper_table1",
}
OUTSIDE = "†"


def published_dir() -> Path | None:
    """Where the published rows are: next to the package (installed) or in the checkout."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "published", conf_dir().parent / "results" / "published"):
        if candidate.is_dir():
            return candidate
    return None


def published_records(source: str) -> list[Record]:
    """The rows of one published source; a ReportError naming the sources there when unknown."""
    folder = published_dir()
    rows = [r for f in sorted(folder.glob("*.csv")) for r in load_csv(f)] if folder else []
    chosen = [r for r in rows if r.source == source]
    if not chosen:
        known = ", ".join(sorted({r.source for r in rows})) or "none found"
        raise ReportError(
            f"no published rows of source {source!r} (known: {known}); "
            "use --published none to leave them out"
        )
    return chosen


def grid_records(grid: Grid) -> list[Record]:
    """Our leaderboard rows of the grid's runs (matched by config hash; the last row of each)."""
    wanted = {run.digest for run in grid.runs}
    files = dict.fromkeys(Path(str(run.cfg.paths.leaderboard)) for run in grid.runs)
    latest: dict[str, Record] = {}
    for path in files:
        if path.exists():
            for rec in load_csv(path):
                if rec.config_hash in wanted:
                    latest[rec.config_hash] = rec
    if not latest:
        shown = ", ".join(str(f) for f in files)
        raise ReportError(
            f"no leaderboard rows of grid {grid.name} in {shown} yet "
            f"(python -m lra_bench.table status experiment={grid.name})"
        )
    order = {run.digest: i for i, run in enumerate(grid.runs)}
    return sorted(latest.values(), key=lambda r: order[r.config_hash])


def cell_text(ours: Stat | None, pub: float | None) -> tuple[str, float | None, bool | None]:
    """(display, delta, outside): '37.10 ± 0.40 | 38.37 (−1.27)†'."""
    if ours is None:
        return (MISSING if pub is None else f"{MISSING} | {pub:.2f}"), None, None
    text = f"{ours.mean:.2f}" + (f" ± {ours.std:.2f}" if ours.std is not None else "")
    if pub is None:
        return text, None, None
    delta = ours.mean - pub
    outside = None if ours.std is None else abs(delta) > ours.std
    return f"{text} | {pub:.2f} ({delta:+.2f}){OUTSIDE if outside else ''}", delta, outside


def accuracy_table(
    grid: Grid, ours: list[Record], published: list[Record], source: str | None
) -> Table:
    """Rows attentions, columns tasks and the average: ours beside the published figure."""
    tasks = [t for t in grid.tasks]
    avg_over = [t for t in TASKS if t in tasks] or tasks
    title = f"{grid.name}: test accuracy (%)" + (f" beside {source}" if source else "")
    table = Table(title, ["Attention", *(TASK_TITLES.get(t, t) for t in tasks), "Avg"])
    for attn in grid.attns:
        cells = {t: accuracy(ours, t, attn) for t in tasks}
        pubs = {t: accuracy(published, t, attn) for t in tasks}
        row = [attn]
        for t in tasks:
            pub = pubs[t].mean if pubs[t] else None
            text, delta, outside = cell_text(cells[t], pub)
            row.append(text)
            s = cells[t]
            table.records.append({
                "table": "accuracy", "attn": attn, "task": t, "mean": rounded(s and s.mean),
                "std": rounded(s and s.std), "n": s.n if s else 0, "published": rounded(pub),
                "delta": rounded(delta), "outside_spread": outside,
            })  # fmt: skip
        row.append(average_text(cells, pubs, avg_over, table, attn))
        table.rows.append(row)
    table.notes += accuracy_notes(grid, source, avg_over)
    return table


def average_text(cells: dict, pubs: dict, over: list[str], table: Table, attn: str) -> str:
    """The average over ``over`` of our cell means, beside the published one over the same tasks."""
    avg = average(cells, over)
    shared = [t for t in over if cells.get(t) is not None and pubs.get(t) is not None]
    pub = average(pubs, shared) if shared else None
    ours = average(cells, shared) if pub else avg
    table.records.append({
        "table": "accuracy", "attn": attn, "task": "avg", "mean": rounded(avg and avg.value),
        "std": None, "n": avg.tasks if avg else 0, "published": rounded(pub and pub.value),
        "delta": rounded(ours.value - pub.value) if ours and pub else None, "outside_spread": None,
    })  # fmt: skip
    if avg is None:
        return MISSING
    text = f"{avg.value:.2f}" + ("*" if avg.partial else "")
    if pub and ours:
        text += f" | {pub.value:.2f} ({ours.value - pub.value:+.2f})"
    return text


def accuracy_notes(grid: Grid, source: str | None, avg_over: list[str]) -> list[str]:
    notes = ["ours: mean ± sample std over the seeds done (one seed: no std); – = no result yet."]
    if source:
        notes.append(
            f"ours | published ({source}) (ours − published, points); {OUTSIDE}: the published "
            "figure lies outside our mean ± std. Avg: ours and the paper's over the tasks both "
            "have."
        )
    if avg_over != list(TASKS):
        notes.append(f"Avg over {', '.join(avg_over)} (the grid's tasks), not all five LRA tasks.")
    notes.append("* partial: over the tasks with results only.")
    return notes


def report_tables(grid: Grid, source: str | None) -> tuple[list[Table], list[Record]]:
    """The accuracy table, then the efficiency tables of each group of our rows; and our rows."""
    ours = grid_records(grid)
    published = published_records(source) if source else []
    tables = [accuracy_table(grid, ours, published, source)]
    for group, recs in group_records(ours).items():
        tables.extend(efficiency_tables(group, recs, grid.tasks))
    return tables, ours


def source_for(grid: Grid, option: str | None) -> str | None:
    if option is not None:
        return None if option.lower() == "none" else option
    return PUBLISHED_OF.get(grid.name)


def write_report(grid: Grid, form: str, html_dir: str | None, published: str | None) -> int:
    """Print the report in ``form``; with ``html_dir`` also write the page there."""
    tables, ours = report_tables(grid, source_for(grid, published))
    sys.stdout.write(render(tables, form))
    if html_dir:
        from lra_bench.table.html import write_page

        path = write_page(Path(html_dir), grid.name, tables, ours)
        print(f"wrote {path}", file=sys.stderr)
    return 0
