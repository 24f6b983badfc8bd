"""``metrics.csv`` in the run folder: the learning curve, kept on disk.

One row per reading of the training loop (logging, evaluation and checkpoint steps) with the
mean loss since the previous reading, the learning rate, real tokens per second and the
training seconds so far; one row per evaluation with the dev accuracy (its loss, lr and
tokens/s cells empty). A resumed run first drops the rows after its checkpoint's step, so the
file never holds a step twice. ``read_curve`` reads the file back (``leaderboard curves``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lra_bench.io import atomic_write_text
from lra_bench.tracking import Tracker

FILENAME = "metrics.csv"
COLUMNS = ("step", "elapsed_s", "loss", "lr", "tokens_per_s", "val_acc")
# the tracker keys each column comes from
TRAIN_KEYS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "tokens_per_s": "train/tokens_per_s",
    "elapsed_s": "train/elapsed_s",
}
EVAL_KEY = "val/acc"


def _cell(value: Any) -> str:
    """A number as the CSV writes it: empty when missing or not finite, else compact."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _kept_rows(path: Path, up_to_step: int) -> tuple[list[list[str]], str | None]:
    """The rows of an existing file at steps <= ``up_to_step``, and a notice when rows were dropped
    for another reason (a torn last line, a foreign header: those are not trusted)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        backup = path.with_name(path.name + ".old")
        os.replace(path, backup)
        return [], f"{path} had another header; moved it to {backup} and started a new one"
    kept, torn = [], 0
    for row in rows[1:]:
        try:
            step = int(row[0]) if len(row) == len(COLUMNS) else None
        except ValueError:
            step = None
        if step is None:
            torn += 1
        elif step <= up_to_step:
            kept.append(row)
    notice = f"{path}: dropped {torn} malformed line(s)" if torn else None
    return kept, notice


class MetricsCsv(Tracker):
    """A tracker writing ``metrics.csv``; rows are flushed as they come, so a crash loses none
    written before it. ``resume_step``: the step the run continues from (0 for a fresh start)."""

    def __init__(self, folder: Path, resume_step: int = 0) -> None:
        self.path = Path(folder) / FILENAME
        self.elapsed: float | None = None
        rows: list[list[str]] = []
        if self.path.exists():
            rows, notice = _kept_rows(self.path, resume_step)
            if notice:
                print(f"note: {notice}")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if TRAIN_KEYS["loss"] in metrics:
            self.elapsed = metrics.get(TRAIN_KEYS["elapsed_s"], self.elapsed)
            cells = {col: metrics.get(key) for col, key in TRAIN_KEYS.items()}
            self._write(step=step, **cells)
        if EVAL_KEY in metrics:
            self._write(step=step, elapsed_s=self.elapsed, val_acc=metrics[EVAL_KEY])

    def _write(self, **values: Any) -> None:
        if self._file.closed:
            return
        self._writer.writerow([_cell(values.get(col)) for col in COLUMNS])
        self._file.flush()

    def finish(self) -> None:
        self._file.close()


class Trackers(Tracker):
    """Several trackers fed the same calls (the CSV always, Weights & Biases when chosen)."""

    def __init__(self, *trackers: Tracker) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for t in self.trackers:
            t.summary(metrics)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


@dataclass
class Curve:
    """One run's curves: (step, value) pairs of training loss and of dev accuracy."""

    name: str
    loss: list[tuple[int, float]] = field(default_factory=list)
    val_acc: list[tuple[int, float]] = field(default_factory=list)


def read_curve(run_dir: Path) -> Curve:
    """The curves in ``run_dir/metrics.csv``; ValueError (one line) when absent or malformed."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise ValueError(f"{path}: no such file (runs write it as they train)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: not a metrics file (header {reader.fieldnames})")
        curve = Curve(name=str(run_dir))
        for row in reader:
            try:
                step = int(row["step"])
                if row["loss"]:
                    curve.loss.append((step, float(row["loss"])))
                if row["val_acc"]:
                    curve.val_acc.append((step, float(row["val_acc"])))
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {reader.line_num} is malformed") from None
    return curve
