"""The grid presets' Hydra callback: how many runs of the grid are complete before and after a
launch.

Complete runs are skipped by the runs themselves (a run finds its results and returns); this says
how many there are before the launch, and what the grid holds after it. It reads only the run
folders' ``results.json`` (the folder of each job as its subdir template names it), so it costs
a fraction of a second even for a large grid.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from lra_bench.table.grid import job_overrides
from lra_bench.table.state import read_json


def _value(job: list[str], key: str) -> str | None:
    for item in job:
        name, _, value = item.partition("=")
        if name.lstrip("+~") == key:
            return value
    return None


def job_folder(master: DictConfig, job: list[str]) -> Path | None:
    """The folder Hydra gives ``job`` (its task, attention and seed names as given), None when
    unknown."""
    names = {key: _value(job, key) for key in ("task", "attn", "seed")}
    if any(v is None for v in names.values()):
        return None
    cfg = copy.deepcopy(master)
    with open_dict(cfg):
        cfg.hydra.overrides.task = list(job)
        cfg.task.name, cfg.attn.name, cfg.seed = names["task"], names["attn"], names["seed"]
        cfg.hydra.runtime.choices.attn = names["attn"]  # the folder names the attn= choice
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def job_complete(master: DictConfig, job: list[str]) -> bool:
    """Whether the folder of ``job`` holds complete results (the run checks the rest itself)."""
    folder = job_folder(master, job)
    results = read_json(folder / "results.json") if folder is not None else None
    return bool(results and results.get("status") == "complete")


def count_complete(master: DictConfig) -> tuple[int, int]:
    """(runs in the grid, runs whose folder holds complete results)."""
    jobs = job_overrides(master)
    return len(jobs), sum(job_complete(master, job) for job in jobs)


class GridSummary(Callback):
    """Prints the grid's size and complete runs when a sweep starts and when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        total, complete = count_complete(config)
        name = config.get("experiment_name") or "grid"
        print(
            f"grid {name}: {total} runs; {complete} already complete (skipped), "
            f"{total - complete} to run",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        total, complete = count_complete(config)
        name = config.get("experiment_name") or "grid"
        follow = "report" if complete == total else "status"
        print(
            f"grid {name}: {complete} of {total} runs complete "
            f"(next: python -m lra_bench.table {follow} with the same overrides)",
            flush=True,
        )
