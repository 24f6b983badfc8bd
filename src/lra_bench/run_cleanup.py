"""A run that failed before training leaves no folder behind (missing data, for instance).

Hydra makes the run folder before the run starts; when the run stops with an error before it
wrote anything of its own (checkpoints, results, curves), the folder holds only what was made
at the start and is removed, with the parents that it alone filled, up to ``paths.runs_dir``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# what a folder holds when a run stopped before training: Hydra's files, the job log, the
# composed config, the lock and the error line
START_FILES = {".hydra", "lra_bench.log", "config.yaml", "run.lock", "error.txt"}


def remove_unstarted(folder: Path, runs_dir: Path) -> bool:
    """Remove ``folder`` when it holds only ``START_FILES``, then its empty parents within
    ``runs_dir``; True when removed."""
    folder, runs_dir = Path(folder).resolve(), Path(runs_dir).resolve()
    if not folder.is_dir() or runs_dir not in folder.parents:
        return False
    if any(entry.name not in START_FILES for entry in folder.iterdir()):
        return False
    shutil.rmtree(folder)
    parent = folder.parent
    while parent == runs_dir or runs_dir in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return True
