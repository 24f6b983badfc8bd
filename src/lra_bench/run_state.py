"""What a run folder holds, checked before a run writes anything there; and its ``error.txt``.

``open_folder`` reads ``results.json``, ``last.pt`` (a complete one is checked against its
completion record without loading it; otherwise loaded, falling back to ``last.prev.pt`` with a
notice when ``last.pt`` is damaged) and ``best.pt``, and refuses with one line a folder it
cannot resume safely: a checkpoint of another configuration, results without a checkpoint,
damaged files. Only after it has passed does the run write (``config.yaml`` first).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lra_bench import checkpoint
from lra_bench.errors import RunError
from lra_bench.io import atomic_write_text

ERROR_FILE = "error.txt"
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "progress", "rng", "config_hash")


@dataclass(frozen=True)
class Opening:
    """What a run starts from: the checkpoint to resume (None: from scratch), the results of
    this same run when they were written but the run not marked complete, or the results of a
    run that already completed here (then nothing is to be done)."""

    saved: dict[str, Any] | None = None
    recorded: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None


def open_folder(folder: Path, digest: str, is_main: bool) -> Opening:
    """Check the run folder's files for a run of config ``digest``; raise ``RunError`` (one line)
    when it cannot be resumed safely. Reads only."""
    last, results_path = folder / "last.pt", folder / "results.json"
    results = read_results(results_path)
    if results is not None and checkpoint.verified_complete(last, digest):
        return Opening(finished=results)  # last.pt's bytes are those recorded when it completed
    saved = read_last(last, is_main)
    if saved is None:
        if results is not None:
            raise RunError(
                f"{folder} holds {results_path.name} but no last.pt, so it cannot be checked or "
                "resumed; nothing was changed: use another run folder (paths.run_dir=...) or move "
                "results.json away to train again"
            )
        return Opening()
    if saved.get("config_hash") != digest:
        raise RunError(
            f"{last} was written by another configuration "
            f"(hash {saved.get('config_hash')}, now {digest}); "
            "use another run folder (paths.run_dir=...) or delete that checkpoint"
        )
    if saved.get("complete") and results is not None:
        return Opening(saved, finished=results)
    check_best(folder / "best.pt", digest)
    run_id = saved["progress"].get("run_id")
    same_run = results is not None and run_id and results.get("run_id") == run_id
    return Opening(saved, recorded=results if same_run else None)


def read_results(path: Path) -> dict[str, Any] | None:
    """``results.json`` as a dict; None when absent; one line when it is damaged."""
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(
            f"{path} is damaged (not JSON: {str(err).splitlines()[0][:80]}); "
            "move it away and re-run "
            "the same command (the run is then tested and recorded again from last.pt)"
        ) from None
    if not isinstance(payload, dict):
        raise RunError(f"{path} is damaged (not a results object); move it away and re-run")
    return payload


def read_last(last: Path, is_main: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from: ``last.pt``, else (damaged) ``last.prev.pt`` with a notice."""
    if not last.exists():
        return None
    try:
        return resumable(checkpoint.load(last), last)
    except checkpoint.CheckpointError as err:
        damaged = str(err)
    prev = checkpoint.previous_of(last)
    if not prev.exists():
        raise RunError(
            f"{damaged}; there is no {prev.name} to fall back on: "
            f"delete {last.name} to train the run "
            "from the start, or use another run folder (paths.run_dir=...)"
        )
    try:
        saved = resumable(checkpoint.load(prev), prev)
    except checkpoint.CheckpointError as err:
        raise RunError(
            f"{damaged}, and so is its predecessor ({err}); "
            "delete both to train the run from the start"
        ) from None
    if is_main:
        print(
            f"notice: {damaged}; resuming from {prev} (step {saved['progress']['step']}) instead",
            file=sys.stderr,
        )
    return saved


def resumable(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """``saved`` when it holds everything a resume reads, else ``CheckpointError``."""
    missing = [key for key in RESUME_KEYS if key not in saved]
    if missing or not isinstance(saved["progress"], dict) or "step" not in saved["progress"]:
        raise checkpoint.CheckpointError(
            f"{path} is not a run checkpoint (it lacks {', '.join(missing) or 'progress.step'})"
        )
    return saved


def check_best(best: Path, digest: str) -> None:
    """A damaged ``best.pt``, or one of another configuration, stops the run before it trains."""
    if not best.exists():
        return
    try:
        saved = checkpoint.load(best)
    except checkpoint.CheckpointError as err:
        problem = str(err)
    else:
        if "model" in saved and saved.get("config_hash") == digest:
            return
        problem = f"{best} is not this run's best checkpoint (another configuration, or no model)"
    raise RunError(
        f"{problem}: this run's best dev checkpoint cannot be tested; "
        f"delete {best.name}, last.pt and "
        "last.prev.pt to train the run again, or use another run folder (paths.run_dir=...)"
    )


def remove_temporaries(folder: Path) -> list[str]:
    """Delete temporary files left by writes that a killed process never finished; their names."""
    gone = []
    for tmp in sorted(folder.glob(".*.tmp-*")):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        gone.append(tmp.name)
    return gone


def write_error(folder: Path, line: str) -> None:
    """Leave the run's one-line error in ``error.txt`` (best effort: a full disk may refuse it)."""
    try:
        atomic_write_text(folder / ERROR_FILE, line.rstrip("\n") + "\n")
    except OSError:
        pass


def clear_error(folder: Path) -> None:
    (folder / ERROR_FILE).unlink(missing_ok=True)
