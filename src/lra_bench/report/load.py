"""Read leaderboard CSVs (``results.COLUMNS``) into validated records."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lra_bench.paths import published_dir, published_names
from lra_bench.report import ReportError
from lra_bench.results import (
    COLUMN_DEFAULTS,
    COLUMNS,
    NUMERIC_COLUMNS,
    SCHEMA_VERSION,
    TEXT_COLUMNS,
)

FRACTIONS = ("val_acc", "test_acc")
REQUIRED_TEXT = ("task", "attn")


@dataclass(frozen=True)
class Record:
    """One leaderboard row: its text cells (``rec.task``, ``rec.device``, ... by column name) and
    its numeric cells (``rec.get("test_acc")``, None when empty)."""

    text: dict[str, str] = field(compare=False)
    values: dict[str, float | None] = field(compare=False)
    origin: str = ""

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    def __getattr__(self, name: str) -> str:
        if name in TEXT_COLUMNS:
            return self.text[name]
        raise AttributeError(name)


def parse_number(text: str) -> float | None:
    """A cell as a float; None when empty or not finite (``nan`` marks a missing measure)."""
    text = text.strip()
    if not text:
        return None
    value = float(text)  # ValueError is reported by the caller with its position
    return value if math.isfinite(value) else None


def resolve_table(name: str | Path) -> Path:
    """A leaderboard file: ``name`` itself when it exists, else the published table of that short
    name (``skyformer_paper``, shipped with the package), else ``name`` (reported as missing)."""
    path = Path(name)
    if path.exists():
        return path
    stem = path.name.removesuffix(".csv")
    if path.parent in (Path("."), Path("results/published")) and stem in published_names():
        return published_dir() / f"{stem}.csv"
    return path


def load_csv(path: str | Path) -> list[Record]:
    """All rows of one leaderboard CSV (a path or a published table's short name); any problem
    raises ReportError naming file and line."""
    path = resolve_table(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read(path, csv.reader(f))
    except FileNotFoundError:
        names = ", ".join(published_names())
        raise ReportError(f"{path}: no such file (published tables by name: {names})") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not a CSV file") from None
    except OSError as err:
        raise ReportError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not UTF-8 text (is it a CSV file?)") from None


def _read(path: Path, reader: Any) -> list[Record]:
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise ReportError(
                f"{path}: empty file (expected a header line with the leaderboard columns)"
            )
        header = [c.strip() for c in header]
        missing = [c for c in COLUMNS if c not in header and c not in COLUMN_DEFAULTS]
        if missing:
            raise ReportError(
                f"{path}: line {reader.line_num}: missing columns {', '.join(missing)} "
                "(not a lra_bench leaderboard CSV?)"
            )
        index = {name: header.index(name) for name in COLUMNS if name in header}
        records = [
            _record(path, reader.line_num, row, header, index)
            for row in reader
            if any(c.strip() for c in row)
        ]
    except csv.Error as err:
        raise ReportError(f"{path}: line {reader.line_num}: malformed CSV: {err}") from None
    if not records:
        raise ReportError(f"{path}: no result rows (only a header)")
    return records


def _record(
    path: Path, line: int, row: list[str], header: list[str], index: dict[str, int]
) -> Record:
    if len(row) != len(header):
        raise ReportError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
    values: dict[str, float | None] = {}
    cells = {name: row[index[name]] if name in index else "" for name in COLUMNS}
    for (
        name,
        default,
    ) in COLUMN_DEFAULTS.items():  # a column added later: absent or empty reads as its default
        if not cells[name].strip():
            cells[name] = str(default)
    for name in NUMERIC_COLUMNS:
        cell = cells[name]
        try:
            values[name] = parse_number(cell)
        except ValueError:
            raise ReportError(
                f"{path}: line {line}, column {index[name] + 1} ({name}): {cell.strip()!r} is not "
                "a number"
            ) from None
    schema = values["schema"]
    if schema != SCHEMA_VERSION:
        shown = "empty" if schema is None else f"{schema:g}"
        raise ReportError(
            f"{path}: line {line}, column {index['schema'] + 1} (schema): schema version {shown}, "
            f"this lra_bench reads version {SCHEMA_VERSION}"
        )
    for name in FRACTIONS:
        value = values[name]
        if value is not None and not 0.0 <= value <= 1.0:
            raise ReportError(
                f"{path}: line {line}, column {index[name] + 1} ({name}): {value:g} is outside "
                "0..1 "
                "(accuracies are stored as fractions)"
            )
    for name in REQUIRED_TEXT:
        if not cells[name].strip():
            raise ReportError(f"{path}: line {line}, column {index[name] + 1} ({name}): empty")
    text = {name: cells[name].strip() for name in TEXT_COLUMNS}
    return Record(text=text, values=values, origin=f"{path}:{line}")


def load_all(paths: list[str] | list[Path]) -> list[Record]:
    """Records of several files, in file order."""
    return [rec for p in paths for rec in load_csv(p)]
