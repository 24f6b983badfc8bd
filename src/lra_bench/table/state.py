"""A run folder's state, read cheaply from the small files a run leaves (never its weights).

- done: ``results.json`` says complete, for this config (its ``config_hash``);
- running: ``run.lock`` names a holder on this host whose process is alive (on another host it
  cannot be checked and is taken at its word);
- failed: ``error.txt`` holds the one line the run printed when it failed;
- stopped: ``last.pt`` exists (a stop, a preemption or a killed process); its step is read from
  the checkpoint's small ``progress`` record, without loading the weights (memory-mapped);
- not started: none of these.

While a run trains, ``metrics.csv`` (``step,elapsed_s,loss,lr,tokens_per_s,val_acc``) gives its
step, its last dev accuracy and, from its own step times, an ETA.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lra_bench.runlock import LOCK_NAME, _pid_alive

DONE, RUNNING, STOPPED, FAILED, NOT_STARTED = "done", "running", "stopped", "failed", "not started"
STALE = "other config"  # a folder holding another configuration's run
METRICS_NAME, ERROR_NAME = "metrics.csv", "error.txt"
TAIL_BYTES = 16384  # metrics.csv is read from its end: enough for the recent rows


@dataclass(frozen=True)
class RunState:
    """What a run folder says about its run."""

    kind: str
    step: int | None = None  # running: the last logged step; stopped/failed: the checkpoint's step
    test_acc: float | None = None
    val_acc: float | None = None  # the last dev accuracy logged
    eta_s: float | None = None
    holder: str | None = None  # host:PID of a running run
    error: str | None = None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holder_of(folder: Path) -> str | None:
    """``host:PID`` of the live process holding the folder's lock, else None."""
    holder = read_json(folder / LOCK_NAME)
    if not holder:
        return None
    host, pid = str(holder.get("host", "?")), int(holder.get("pid", 0) or 0)
    if host == socket.gethostname() and not (pid and _pid_alive(pid)):
        return None  # left by a process that died
    return f"{host}:{pid}"


def checkpoint_step(path: Path) -> int | None:
    """The step of ``last.pt`` (memory-mapped: the weights are not read), None when unreadable."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(saved["progress"]["step"])
    except Exception:  # a damaged or foreign file: no step, the run says the rest when resumed
        return None


def error_line(folder: Path) -> str | None:
    try:
        lines = (folder / ERROR_NAME).read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[0] if lines else "failed (empty error.txt)"


@dataclass(frozen=True)
class Progress:
    """From metrics.csv: the last step, the last dev accuracy and seconds per step lately."""

    step: int | None
    val_acc: float | None
    s_per_step: float | None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def metrics_progress(folder: Path) -> Progress:
    """The tail of ``metrics.csv``: a damaged or missing file gives an empty Progress."""
    path = folder / METRICS_NAME
    try:
        with open(path, "rb") as f:
            header = f.readline().decode(errors="replace")
            start = max(f.tell(), os.path.getsize(path) - TAIL_BYTES)
            cut = start > f.tell()  # the first line read may be a part of one
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()[1 if cut else 0 :]
    except OSError:
        return Progress(None, None, None)
    text = header + "\n".join(lines)
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("step")]
    steps = [(_number(r["step"]), _number(r.get("elapsed_s")), r) for r in rows]
    steps = [(s, e, r) for s, e, r in steps if s is not None]
    if not steps:
        return Progress(None, None, None)
    vals = [_number(r.get("val_acc")) for _, _, r in steps]
    val = next((v for v in reversed(vals) if v is not None), None)
    timed = [(s, e) for s, e, _ in steps if e is not None]
    rate = None
    if len(timed) >= 2 and timed[-1][0] > timed[0][0] and timed[-1][1] >= timed[0][1]:
        rate = (timed[-1][1] - timed[0][1]) / (timed[-1][0] - timed[0][0])
    return Progress(int(steps[-1][0]), val, rate)


def read_state(folder: Path, digest: str, steps: int) -> RunState:
    """The state of the run of config ``digest`` (``steps`` long) in ``folder``."""
    if not folder.is_dir():
        return RunState(NOT_STARTED)
    holder = holder_of(folder)
    results = read_json(folder / "results.json")
    if holder is not None:
        progress = metrics_progress(folder)
        eta = None
        if progress.step is not None and progress.s_per_step is not None:
            eta = max(steps - progress.step, 0) * progress.s_per_step
        return RunState(RUNNING, progress.step, None, progress.val_acc, eta, holder)
    if results and results.get("status") == "complete":
        if results.get("config_hash") not in (None, digest):
            return RunState(STALE, error=f"holds a run of config {results.get('config_hash')}")
        return RunState(DONE, int(results.get("steps") or 0), _number(str(results.get("test_acc"))))
    last = folder / "last.pt"
    step = checkpoint_step(last) if last.exists() else None
    error = error_line(folder)
    if error is not None:
        return RunState(FAILED, step, error=error)
    if step is not None:
        return RunState(STOPPED, step, val_acc=metrics_progress(folder).val_acc)
    return RunState(NOT_STARTED)
