"""Plain tables and their Markdown, LaTeX, CSV and JSON renderings."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

MISSING = "–"
FORMATS = ("markdown", "csv", "latex", "json")


@dataclass
class Table:
    """A titled grid of display strings, with footnotes and numeric records for CSV/JSON."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1  # leading text columns (left-aligned); the rest are right-aligned
    records: list[dict[str, Any]] = field(default_factory=list)


def fmt(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(
    header: list[str], rows: list[list[str]], label_columns: int = 1, padded: bool = True
) -> str:
    """One Markdown table: the first ``label_columns``
    columns left-aligned, the others right-aligned.

    ``padded`` pads cells so that the columns line up as plain text too; unpadded tables stay
    narrow when cells differ much in width.
    """
    grid = [[_md_cell(c) for c in row] for row in (header, *rows)]
    widths = (
        [max(len(x) for x in col) for col in zip(*grid, strict=True)]
        if padded
        else [0] * len(header)
    )

    def line(cells: list[str]) -> str:
        aligned = [
            c.ljust(w) if i < label_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(aligned) + " |"

    if padded:
        rule = (
            "|"
            + "|".join(
                "-" * (w + 1) + ("-" if i < label_columns else ":") for i, w in enumerate(widths)
            )
            + "|"
        )
    else:
        rule = (
            "|" + "|".join("---" if i < label_columns else "---:" for i in range(len(header))) + "|"
        )
    return "\n".join([line(grid[0]), rule, *(line(r) for r in grid[1:])])


def to_markdown(tables: list[Table]) -> str:
    out: list[str] = []
    for t in tables:
        out.append(f"### {t.title}\n")
        out.append(markdown_table(t.header, t.rows, t.label_columns))
        if t.notes:
            out.append("")
            out.extend(f"{n}  " for n in t.notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
    "Δ": r"$\Delta$",
    "·": r"$\cdot$",
    "≥": r"$\geq$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(tables: list[Table]) -> str:
    out: list[str] = []
    for t in tables:
        spec = "l" * t.label_columns + "r" * (len(t.header) - t.label_columns)
        out.append("\\begin{table}[t]\n\\centering\\small")
        out.append(f"\\caption{{{latex_escape(t.title)}}}")
        out.append(f"\\begin{{tabular}}{{{spec}}}\n\\toprule")
        out.append(" & ".join(latex_escape(h) for h in t.header) + r" \\")
        out.append("\\midrule")
        out.extend(" & ".join(latex_escape(c) for c in r) + r" \\" for r in t.rows)
        out.append("\\bottomrule\n\\end{tabular}")
        out.extend(f"\\par\\footnotesize {latex_escape(n)}" for n in t.notes)
        out.append("\\end{table}\n")
    return "\n".join(out)


def record_columns(tables: list[Table]) -> list[str]:
    return list(dict.fromkeys(k for t in tables for r in t.records for k in r))


def to_csv(tables: list[Table]) -> str:
    """All tables' numeric records in one CSV (long format)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=record_columns(tables), lineterminator="\n", restval="")
    writer.writeheader()
    for t in tables:
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in t.records)
    return buf.getvalue()


def to_json(tables: list[Table]) -> str:
    payload = [{"title": t.title, "notes": t.notes, "records": t.records} for t in tables]
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def render(tables: list[Table], form: str) -> str:
    return {"markdown": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}[form](
        tables
    )
