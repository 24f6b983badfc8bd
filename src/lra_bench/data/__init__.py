"""Task data: each task module turns its sources into cached Arrow splits.

Contract of a task module (``lra_bench.data.<task>``): a function
``prepare(settings: DataSettings) -> dict[str, datasets.Dataset]`` returning the splits
``train``, ``val`` and ``test``. Each row holds ``input_ids`` (unpadded token ids, 0 is
padding and never appears inside a sequence unless the task says so) and ``label``
(int); dual tasks hold ``input_ids_1`` and ``input_ids_2`` instead of ``input_ids``.
The settings arrive validated (``lra_bench.config.validate``); modules do not re-check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lra_bench.data.tasks import TASK_MODULES
from lra_bench.errors import DataError

if TYPE_CHECKING:  # config.py reads data.tasks: importing config here would run in a loop
    import datasets

    from lra_bench.config import DataConfig, TaskConfig

__all__ = ["DataError", "DataSettings", "TASK_MODULES", "data_settings", "load_splits"]


@dataclass(frozen=True)
class DataSettings:
    """What a task module reads: the task and data settings,
    where sources are looked for, where the cache is."""

    task: TaskConfig
    data: DataConfig
    data_dir: Path  # paths.data_dir: the folder searched for sources when data.root is unset
    cache_dir: Path  # paths.cache_dir: prepared splits and generated files
    progress: bool = True  # progress bars while preparing


def _typed(schema: type, node: Any) -> Any:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def data_settings(cfg: DictConfig) -> DataSettings:
    """The data part of a run's config, typed."""
    from lra_bench.config import DataConfig, TaskConfig

    return DataSettings(
        task=_typed(TaskConfig, cfg.task),
        data=_typed(DataConfig, cfg.data),
        data_dir=Path(str(cfg.paths.data_dir)).expanduser(),
        cache_dir=Path(str(cfg.paths.cache_dir)).expanduser(),
        progress=bool(OmegaConf.select(cfg, "trainer.progress", default=True)),
    )


def load_splits(cfg: DictConfig) -> dict[str, datasets.Dataset]:
    """Prepare (or load from the cache) the task's splits, then apply ``data.limit_*``."""
    name = cfg.task.name
    if name not in TASK_MODULES:
        raise DataError(
            f"task {name!r} has no data module yet; available: {', '.join(sorted(TASK_MODULES))}"
        )
    settings = data_settings(cfg)
    splits = import_module(TASK_MODULES[name]).prepare(settings)
    for split, ds in splits.items():
        check_ranges(
            ds, f"{name} {split} split", settings.task.vocab_size, settings.task.num_classes
        )
    limits = {
        "train": settings.data.limit_train,
        "val": settings.data.limit_eval,
        "test": settings.data.limit_eval,
    }
    for split, limit in limits.items():
        if limit is not None and len(splits[split]) > limit:
            splits[split] = splits[split].select(range(limit))
    return splits


def check_ranges(ds: datasets.Dataset, what: str, vocab_size: int, num_classes: int) -> None:
    """Token ids within ``0..vocab_size-1`` and labels
    within ``0..num_classes-1``, in one cheap pass."""
    from lra_bench.data.cache import split_summary

    columns = {k: v for k, v in split_summary(ds).items() if k != "rows"}
    for column, (count, lo, hi, _) in columns.items():
        if not count:
            continue
        limit = (
            num_classes
            if column == "label"
            else vocab_size
            if column.startswith("input_ids")
            else None
        )
        if limit is not None and (lo < 0 or hi >= limit):
            kind = "label" if column == "label" else "token id"
            where = (
                f"delete the cache folder {Path(ds.cache_files[0]['filename']).parents[1]} to "
                "rebuild it"
                if ds.cache_files
                else "check the data source"
            )
            raise DataError(f"{what} holds {kind}s {lo}..{hi}, outside 0..{limit - 1}: {where}")
