"""Task data: each task module turns its sources into cached Arrow splits.

Contract of a task module (``lra_bench.data.<task>``): a function
``prepare(cfg: DictConfig) -> dict[str, datasets.Dataset]`` returning the splits
``train``, ``val`` and ``test``. Each row holds ``input_ids`` (unpadded token ids, 0 is
padding and never appears inside a sequence unless the task says so) and ``label``
(int); dual tasks hold ``input_ids_1`` and ``input_ids_2`` instead of ``input_ids``.
"""

from __future__ import annotations

from importlib import import_module

import datasets
from omegaconf import DictConfig

from lra_bench.errors import DataError

TASK_MODULES = {
    "listops": "lra_bench.data.listops",
    "text": "lra_bench.data.text",
    "retrieval": "lra_bench.data.retrieval",
    "image": "lra_bench.data.image",
    "pathfinder": "lra_bench.data.pathfinder",
    "pathx": "lra_bench.data.pathfinder",
}


def load_splits(cfg: DictConfig) -> dict[str, datasets.Dataset]:
    """Prepare (or load from the cache) the task's splits, then apply ``data.limit_*``."""
    name = cfg.task.name
    if name not in TASK_MODULES:
        raise DataError(f"task {name!r} has no data module yet; available: {', '.join(sorted(TASK_MODULES))}")
    splits = import_module(TASK_MODULES[name]).prepare(cfg)
    limits = {"train": cfg.data.limit_train, "val": cfg.data.limit_eval, "test": cfg.data.limit_eval}
    for split, limit in limits.items():
        if limit is not None and len(splits[split]) > limit:
            splits[split] = splits[split].select(range(limit))
    return splits
