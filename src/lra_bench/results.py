"""Run outputs: ``results.json`` in the run folder and one locked row appended to the leaderboard CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from lra_bench.errors import ResultsError
from lra_bench.io import atomic_write_json

SCHEMA_VERSION = 1

# The leaderboard's columns, in order (described in docs/outputs.md); published rows use the same schema.
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
]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (readers never see half a file)."""
    atomic_write_json(path, payload)


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

    An existing file with another header is never touched: that is an error naming the file.
    The row is written with a single write and fsync, so parallel jobs never tear a row.
    """
    path = Path(path)
    line = format_row(row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
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
