"""A run that failed before training leaves no folder behind (missing data, for instance).

Hydra makes the run folder before the run starts; when the run stops with an error before it
wrote anything of its own (checkpoints, results, curves), the folder holds only what was made
at the start and is removed, with the parents that it alone filled, up to ``paths.runs_dir``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

# what a folder holds when a run stopped before training: Hydra's files, the job log, the
# composed config, the lock and the error line
START_FILES = {".hydra", "lra_bench.log", "config.yaml", "run.lock", "error.txt"}


def remove_unstarted(folder: Path, runs_dir: Path) -> bool:
    """Remove ``folder`` when it holds only ``START_FILES`` and no other process's ``run.lock``,
    then its empty parents within ``runs_dir``; True when removed."""
    folder, runs_dir = Path(folder).resolve(), Path(runs_dir).resolve()
    if not folder.is_dir() or runs_dir not in folder.parents:
        return False
    names = {entry.name for entry in folder.iterdir()}
    if names - START_FILES or "run.lock" in names:  # run.lock: another process trains here
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


def forget_unstarted_run(cfg: DictConfig) -> None:
    """After a missing-data failure: remove the run's folders (Hydra's and ``paths.run_dir``)
    when nothing of a run is in them."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        remove_unstarted(Path(HydraConfig.get().runtime.output_dir), Path(cfg.paths.runs_dir))
    if cfg.paths.run_dir:
        remove_unstarted(Path(cfg.paths.run_dir), Path(cfg.paths.run_dir).parent)
