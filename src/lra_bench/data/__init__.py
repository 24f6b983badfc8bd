"""Task data: each task module turns its sources into cached Arrow splits.

Contract of a task module (``lra_bench.data.<task>``): a function
``prepare(cfg: DictConfig) -> dict[str, datasets.Dataset]`` returning the splits
``train``, ``val`` and ``test``. Each row holds ``input_ids`` (unpadded token ids, 0 is
padding and never appears inside a sequence unless the task says so) and ``label``
(int); dual tasks hold ``input_ids_1`` and ``input_ids_2`` instead of ``input_ids``.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

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
    for split, ds in splits.items():
        check_ranges(ds, f"{name} {split} split", cfg.task.vocab_size, cfg.task.num_classes)
    limits = {"train": cfg.data.limit_train, "val": cfg.data.limit_eval, "test": cfg.data.limit_eval}
    for split, limit in limits.items():
        if limit is not None and len(splits[split]) > limit:
            splits[split] = splits[split].select(range(limit))
    return splits


def check_ranges(ds: datasets.Dataset, what: str, vocab_size: int, num_classes: int) -> None:
    """Token ids within ``0..vocab_size-1`` and labels within ``0..num_classes-1``, in one cheap pass."""
    from lra_bench.data.cache import split_summary

    columns = {k: v for k, v in split_summary(ds).items() if k != "rows"}
    for column, (count, lo, hi, _) in columns.items():
        if not count:
            continue
        limit = num_classes if column == "label" else vocab_size if column.startswith("input_ids") else None
        if limit is not None and (lo < 0 or hi >= limit):
            kind = "label" if column == "label" else "token id"
            where = f"delete the cache folder {Path(ds.cache_files[0]['filename']).parents[1]} to rebuild it" if ds.cache_files else "check the data source"
            raise DataError(f"{what} holds {kind}s {lo}..{hi}, outside 0..{limit - 1}: {where}")
