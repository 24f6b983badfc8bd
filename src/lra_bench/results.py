"""Run outputs: ``results.json`` in the run folder and one locked row appended to the leaderboard
CSV.

Appends are idempotent per run: each row carries its run's ``run_id`` and a row whose id is
already in the file is not written again, so a run stopped anywhere between writing
``results.json``, appending and marking ``last.pt`` complete can be re-run without losing or
doubling its row. A file whose last line was cut off, with an older header, or of another
schema is repaired, upgraded or refused here (``check_appendable`` finds the refusals before a
run trains).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import DiskFullError, ResultsError
from lra_bench.io import NO_SPACE, atomic_write_text, no_space

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class LeaderboardRow:
    """One leaderboard row, also the body of ``results.json``; published rows use the same schema.

    The fields, in order, are the CSV's columns. Fields typed ``int`` or ``float`` are numeric
    (an empty cell means missing). A column added later gets a default here, which older files
    that lack it read as.
    """

    schema: int
    source: str  # "run", or the paper table a published row comes from
    time: str
    task: str
    attn: str
    seed: int
    steps: int
    best_step: int
    val_acc: float
    test_acc: float
    train_s: float
    step_ms: float
    tokens_per_s: float | str  # "" when no step was timed
    peak_mem_mb: float
    params: int
    device: str
    precision: str
    compiled: bool = False  # trained through torch.compile
    batch_size: int
    max_len: int
    commit: str
    config_hash: str
    overrides: str
    run_dir: str
    parity: str = (
        "none"  # whose code the run reproduces: none | skyformer_code | lra_code (docs/fidelity.md)
    )
    protocol: str = "skyformer_paper"  # training recipe: skyformer_paper | lra_paper
    run_id: str = ""  # the run's id (also in results.json and last.pt); empty in older rows
    kind: str = "full"  # full | smoke (a wiring check: lra_bench.run_kind); reports hide smoke rows

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


def _is_numeric(annotation: str) -> bool:
    return annotation.split("|")[0].strip() in ("int", "float")


_FIELDS = fields(LeaderboardRow)
COLUMNS = [f.name for f in _FIELDS]
NUMERIC_COLUMNS = tuple(f.name for f in _FIELDS if _is_numeric(str(f.type)))
TEXT_COLUMNS = tuple(f.name for f in _FIELDS if not _is_numeric(str(f.type)))
# columns an older file may lack, with the value such a file is read as
COLUMN_DEFAULTS = {f.name: f.default for f in _FIELDS if f.default is not MISSING}
# columns that say what a row can be compared with (compare warns when they differ)
LABEL_COLUMNS = ("parity", "protocol")
# the header of files written before the columns with defaults existed: upgraded on append
EARLIER_COLUMNS = [c for c in COLUMNS if c not in COLUMN_DEFAULTS]
RUN_ID = re.compile(r"[0-9a-f]{16}")


def run_labels(cfg: DictConfig) -> dict[str, str]:
    """The row's ``parity``, ``protocol`` (``cfg.protocol.name`` when it has one) and ``kind``."""
    from lra_bench.run_kind import run_kind

    return {
        key: str(OmegaConf.select(cfg, path, default=None) or COLUMN_DEFAULTS[key])
        for key, path in (("parity", "parity"), ("protocol", "protocol.name"))
    } | {"kind": run_kind(cfg)}


def new_run_id() -> str:
    """A fresh run id: 16 hex digits, random (a re-created folder's run gets a new one)."""
    return os.urandom(8).hex()


@dataclass
class Board:
    """A leaderboard file as read: its header, body rows (with their line numbers) and state."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]
    torn: bool = False  # the last line lacks its newline (but is otherwise whole)

    def has_run(self, run_id: str) -> bool:
        if not run_id or "run_id" not in self.header:
            return False
        at = self.header.index("run_id")
        return any(cells[at] == run_id for _, cells in self.rows)


def _bad(path: Path, what: str) -> ResultsError:
    return ResultsError(
        f"{path}: {what}; fix or move the file, or point paths.leaderboard at a new one"
    )


def read_board(path: Path) -> Board | None:
    """Read and check a leaderboard file; None when it is missing or blank.

    Raises ``ResultsError`` (one line) for text that is not UTF-8 CSV, another schema, a row with
    the wrong number of fields, or a last line cut off inside a row (a torn write).
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text (is it a leaderboard CSV?)") from None
    if not text.strip():
        return None
    reader = csv.reader(io.StringIO(text))
    try:
        lines = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as err:
        raise _bad(path, f"line {reader.line_num}: malformed CSV ({err})") from None
    (_, header), body = lines[0], lines[1:]
    _check_header(path, header)
    torn = not text.endswith("\n")
    for number, cells in body:
        if len(cells) != len(header):
            last = torn and (number, cells) == body[-1]
            what = "is cut off (an interrupted write):" if last else "has"
            raise _bad(
                path, f"line {number} {what} {len(cells)} fields, the header has {len(header)}"
            )
    if torn and body and not _complete_last_cell(header, body[-1][1]):
        raise _bad(path, f"line {body[-1][0]} is cut off (an interrupted write)")
    return Board(path, header, body, torn)


def _check_header(path: Path, header: list[str]) -> None:
    """The header must be COLUMNS, or an older one lacking only columns that have defaults."""
    missing = [c for c in COLUMNS if c not in header and c not in COLUMN_DEFAULTS]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise ResultsError(
            f"{path} has columns of another schema (first line: {','.join(header)[:80]!r}); "
            "point paths.leaderboard at a new file"
        )


def _complete_last_cell(header: list[str], cells: list[str]) -> bool:
    """A torn line with every field is whole when its last cell cannot be a cut-off value."""
    if header[-1] == "run_id":
        return RUN_ID.fullmatch(cells[-1]) is not None
    if header[-1] == "kind":
        return cells[-1] in ("full", "smoke")
    return bool(cells[-1])


def upgraded_text(board: Board, extra: list[str] | None = None) -> str:
    """The board rewritten in COLUMNS order (missing columns get their defaults), plus ``extra``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for _, cells in board.rows:
        named = dict(zip(board.header, cells, strict=True))
        writer.writerow([named.get(c, COLUMN_DEFAULTS.get(c, "")) for c in COLUMNS])
    return buf.getvalue() + "".join(extra or [])


def check_appendable(path: str | Path) -> None:
    """Raise ``ResultsError`` now for anything that would stop ``append_row`` later (run before
    training)."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"the leaderboard {path} is a folder; set paths.leaderboard to a file")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ResultsError(
                f"cannot write the leaderboard {path}: permission denied; "
                "set paths.leaderboard to a writable file"
            )
        read_board(path)
        return
    parent = next(p for p in [path.parent, *path.parent.parents] if p.exists() or p == p.parent)
    if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        why = "not a folder" if not parent.is_dir() else "permission denied"
        raise ResultsError(
            f"cannot write the leaderboard {path}: {parent} is {why}; "
            "set paths.leaderboard to a writable file"
        )


def format_row(row: dict[str, Any]) -> str:
    """One CSV line (with newline) holding ``row`` in COLUMNS order."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ResultsError(f"leaderboard row lacks columns {missing}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


def append_row(path: str | Path, row: dict[str, Any]) -> bool:
    """Append one row under a file lock unless a row with its ``run_id`` is there; True when
    written.

    A new or blank file gets the header first. A file with an older header is rewritten
    atomically in the current column order (older rows get the new columns' defaults); a last
    line that lacks only its newline gets it. Other problems raise ``ResultsError`` and leave the
    file untouched. The row is written with a single write and fsync, so parallel jobs never
    tear a row.
    """
    path = Path(path)
    line = format_row(row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            board = read_board(path)
            if board is not None and board.has_run(str(row.get("run_id", ""))):
                return False
            if board is None:
                atomic_write_text(path, ",".join(COLUMNS) + "\n" + line)
            elif board.header != COLUMNS:
                atomic_write_text(path, upgraded_text(board, [line]))
                print(f"notice: {path}: upgraded to the current columns", file=sys.stderr)
            else:
                _append_line(path, ("\n" if board.torn else "") + line)
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(path) from None
        raise ResultsError(
            f"cannot write the leaderboard {path}: {err.strerror}; "
            "set paths.leaderboard to a writable file"
        ) from None
    return True


def _append_line(path: Path, text: str) -> None:
    with open(path, "a", newline="", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
