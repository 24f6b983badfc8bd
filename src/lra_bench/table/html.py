"""The report as one self-contained HTML page: its tables and the speed/accuracy/memory chart.

The chart is ``leaderboard plot``'s, embedded as a base64 PNG; the page loads nothing else, so
it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from lra_bench.errors import ReportError
from lra_bench.io import atomic_write_text
from lra_bench.report.load import Record
from lra_bench.report.render import Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eee; }
p.note { font-size: 0.85em; color: #555; margin: 0.1em 0; }
img { max-width: 100%; }
"""


def table_html(table: Table) -> str:
    """One table: a heading, the grid (label columns left, figures right), its notes."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{'' if i < table.label_columns else ' class=num'}>{esc(str(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>\n"
        for row in table.rows
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>\n' for n in table.notes)
    return f"<h2>{esc(table.title)}</h2>\n<table>\n<tr>{head}</tr>\n{body}</table>\n{notes}"


def chart_png(records: list[Record], title: str) -> tuple[bytes | None, list[str]]:
    """The chart of ``records`` as PNG bytes, or None and why (no softmax times, no matplotlib)."""
    from lra_bench.report.plot import draw, plot_data

    data = plot_data(records)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = draw(data, Path(tmp) / "chart.png", title)
        except ReportError as err:
            return None, [str(err)]
        return path.read_bytes(), data.notes


def page(name: str, tables: list[Table], records: list[Record]) -> str:
    """The whole page as a string."""
    png, notes = chart_png(records, f"{name}: accuracy, speed and memory")
    chart = (
        '<img alt="speed, accuracy and memory chart" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else ""
    )
    chart_notes = "".join(f'<p class="note">{html.escape(n)}</p>\n' for n in notes)
    body = "\n".join(table_html(t) for t in tables)
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f"<title>{html.escape(name)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(name)}</h1>\n{body}\n"
        f"<h2>Speed, accuracy and memory</h2>\n{chart}\n{chart_notes}</body>\n</html>\n"
    )


def write_page(folder: Path, name: str, tables: list[Table], records: list[Record]) -> Path:
    """Write ``folder/<name>.html``; a ReportError when the folder cannot be written."""
    path = folder / f"{name}.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, page(name, tables, records))
    except OSError as err:
        raise ReportError(f"{path}: cannot write: {err.strerror}") from None
    return path
