"""Run outputs: ``results.json`` in the run folder and one locked row appended to the leaderboard CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import ResultsError
from lra_bench.io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1

# The leaderboard's columns, in order (DESIGN §6); published rows use the same schema.
COLUMNS = [
    "schema",
    "source",
    "time",
    "task",
    "attn",
    "seed",
    "steps",
    "best_step",
    "val_acc",
    "test_acc",
    "train_s",
    "step_ms",
    "tokens_per_s",
    "peak_mem_mb",
    "params",
    "device",
    "precision",
    "batch_size",
    "max_len",
    "commit",
    "config_hash",
    "overrides",
    "run_dir",
    "parity",
    "protocol",
]
# Columns added after the first release: files without them still load, and gain them (with
# these values) the next time a row is appended.
LATER_COLUMNS = {"parity": "none", "protocol": "skyformer_paper"}
EARLIER_COLUMNS = [c for c in COLUMNS if c not in LATER_COLUMNS]


def run_labels(cfg: DictConfig) -> dict[str, str]:
    """The row's ``parity`` (whose code the run reproduces) and ``protocol`` (training recipe) of a run config."""
    return {
        key: str(OmegaConf.select(cfg, path, default=None) or LATER_COLUMNS[key])
        for key, path in (("parity", "parity"), ("protocol", "protocol.name"))
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (readers never see half a file)."""
    atomic_write_json(path, payload)


def header_of(path: Path) -> list[str]:
    """The first line of a CSV file, split on commas."""
    with open(path, newline="", encoding="utf-8") as f:
        return f.readline().rstrip("\r\n").split(",")


def format_row(row: dict[str, Any]) -> str:
    """One CSV line (with newline) holding ``row`` in COLUMNS order."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ResultsError(f"leaderboard row lacks columns {missing}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


def add_later_columns(path: Path) -> None:
    """Rewrite (atomically) a leaderboard with the earlier header, adding LATER_COLUMNS' values to every row."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row + list(LATER_COLUMNS.values()) for row in rows[1:] if row)
    atomic_write_text(path, buf.getvalue())


def append_row(path: str | Path, row: dict[str, Any]) -> Path:
    """Append one row under a file lock; write the header first when the file is new or empty.

    A file with the earlier header gains the later columns first (its rows keep every value).
    An existing file with another header is never touched: that is an error naming the file.
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
        raise ResultsError(f"cannot write the leaderboard {path}: {err.strerror}; set paths.leaderboard to a writable file") from None
    return path
