"""Run outputs: ``results.json`` in the run folder and one locked row appended to the leaderboard CSV."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import ResultsError
from lra_bench.io import atomic_write_text

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


def run_labels(cfg: DictConfig) -> dict[str, str]:
    """The row's ``parity``, ``protocol`` (``cfg.protocol.name`` when it has one) and ``kind``."""
    from lra_bench.run_kind import run_kind

    return {
        key: str(OmegaConf.select(cfg, path, default=None) or COLUMN_DEFAULTS[key])
        for key, path in (("parity", "parity"), ("protocol", "protocol.name"))
    } | {"kind": run_kind(cfg)}


def header_of(path: Path) -> list[str]:
    """The first line of a CSV file, split on commas."""
    with open(path, newline="", encoding="utf-8") as f:
        return f.readline().rstrip("\r\n").split(",")


def add_later_columns(path: Path) -> None:
    """Rewrite (atomically) a leaderboard with the earlier header, giving every row the later columns' defaults."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    later = [str(COLUMN_DEFAULTS[c]) for c in COLUMNS if c not in EARLIER_COLUMNS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row + later for row in rows[1:] if row)
    atomic_write_text(path, buf.getvalue())


def format_row(row: dict[str, Any]) -> str:
    """One CSV line (with newline) holding ``row`` in COLUMNS order."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ResultsError(f"leaderboard row lacks columns {missing}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


def append_row(path: str | Path, row: dict[str, Any]) -> Path:
    """Append one row under a file lock; write the header first when the file is new or empty.

    A file with the earlier header (before the columns with defaults) gains those columns first,
    every row keeping its values. A file with another header is never touched: that is an
    error naming the file.
    The row is written with a single write and fsync, so parallel jobs never tear a row.
    """
    path = Path(path)
    line = format_row(row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists() and header_of(path) == EARLIER_COLUMNS:
                add_later_columns(path)
            with open(path, "a+", newline="") as f:
                f.seek(0)
                header = f.readline()
                if not header:
                    f.write(",".join(COLUMNS) + "\n")
                elif header.rstrip("\r\n").split(",") != COLUMNS:
                    raise ResultsError(
                        f"{path} has columns of another schema (first line: {header.strip()[:80]!r}); "
                        "point paths.leaderboard at a new file"
                    )
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:
        raise ResultsError(
            f"cannot write the leaderboard {path}: {err.strerror}; set paths.leaderboard to a writable file"
        ) from None
    return path
