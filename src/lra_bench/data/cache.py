"""Arrow cache of prepared splits: keyed by a hash of every parameter that shapes them.

A cache entry is a folder ``<cache_dir>/<task>-<hash>/`` holding one ``save_to_disk``
folder per split and a ``key.json`` written last (its presence marks the entry complete).
Building happens in a temporary sibling folder renamed into place under a file lock,
so concurrent jobs never see or leave a half-written entry. Loading is memory-mapped.

``key.json`` also records, per split, the row count and for every integer column the count,
minimum, maximum and sum of its values (list columns flattened). Loading recomputes these in
one vectorised pass and rebuilds the entry, with a one-line notice, when anything differs:
damaged bytes in an Arrow file cannot slip through to training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from lra_bench.errors import DataError
from lra_bench.io import atomic_dir, build_lock

SPLITS = ("train", "val", "test")
CACHE_FORMAT = 2  # 2: key.json carries per-split summaries


def cache_key_hash(task: str, key: dict[str, Any]) -> str:
    blob = json.dumps({"task": task, "format": CACHE_FORMAT, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, task: str, key: dict[str, Any]) -> Path:
    return Path(cache_dir).expanduser() / f"{task}-{cache_key_hash(task, key)}"


def split_summary(ds: datasets.Dataset) -> dict[str, Any]:
    """Row count and, per integer column, count/min/max/sum of its (flattened) values."""
    table = ds.data.table
    summary: dict[str, Any] = {"rows": ds.num_rows}
    for name in table.column_names:
        values = table.column(name)
        while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        if not pa.types.is_integer(values.type):
            continue
        lo_hi = pc.min_max(values)
        total = pc.sum(values.cast(pa.int64())).as_py() if len(values) else 0
        summary[name] = [len(values), lo_hi["min"].as_py(), lo_hi["max"].as_py(), total]
    return summary


def _load(entry: Path) -> tuple[dict[str, datasets.Dataset] | None, str]:
    """Load and verify a complete entry; else None and why (missing, unreadable, mismatch)."""
    if not (entry / "key.json").is_file():
        return None, "incomplete" if entry.exists() else "missing"
    try:
        recorded = json.loads((entry / "key.json").read_text()).get("summaries", {})
        splits = {split: datasets.load_from_disk(str(entry / split)) for split in SPLITS}
        for split in SPLITS:
            if split_summary(splits[split]) != recorded.get(split):
                return (
                    None,
                    f"{split} split does not match the row count and token ranges recorded in key.json",
                )
    except (OSError, ValueError, json.JSONDecodeError, pa.ArrowException) as err:
        return None, f"unreadable ({type(err).__name__})"
    return splits, ""


def cached_splits(
    cache_dir: str | Path,
    task: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, datasets.Dataset]],
) -> dict[str, datasets.Dataset]:
    """Return the cached splits for (task, key), building them with ``build()`` on a miss."""
    entry = cache_path(cache_dir, task, key)
    loaded, _ = _load(entry)
    if loaded is not None:
        return loaded
    entry.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(Path(str(entry) + ".lock"), entry / "key.json"):
        loaded, why = _load(entry)  # another job may have finished it while we waited
        if loaded is not None:
            return loaded
        if entry.exists():  # incomplete or damaged: rebuild
            print(f"notice: rebuilding the data cache {entry}: {why}", file=sys.stderr, flush=True)
            shutil.rmtree(entry)
        _write(entry, task, key, build())
    loaded, why = _load(entry)
    if loaded is None:
        raise DataError(
            f"data cache {entry} is unreadable right after writing ({why}); check the disk under paths.cache_dir"
        )
    return loaded


def _write(
    entry: Path, task: str, key: dict[str, Any], splits: dict[str, datasets.Dataset]
) -> None:
    """Save the splits and then ``key.json`` (with their summaries) into ``entry`` at once."""
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with atomic_dir(entry) as tmp:
            summaries = {}
            for split in SPLITS:
                splits[split].save_to_disk(str(tmp / split))
                summaries[split] = split_summary(datasets.load_from_disk(str(tmp / split)))
            record = {"task": task, **key, "summaries": summaries}
            (tmp / "key.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
