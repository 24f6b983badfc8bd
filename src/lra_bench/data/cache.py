"""Arrow cache of prepared splits: keyed by a hash of every parameter that shapes them.

A cache entry is a folder ``<cache_dir>/<task>-<hash>/`` holding one ``save_to_disk``
folder per split and a ``key.json`` written last (its presence marks the entry complete).
Building happens in a temporary sibling folder renamed into place under a file lock,
so concurrent jobs never see or leave a half-written entry. Loading is memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
from filelock import FileLock

from lra_bench.io import atomic_dir

SPLITS = ("train", "val", "test")
CACHE_FORMAT = 1


def cache_key_hash(task: str, key: dict[str, Any]) -> str:
    blob = json.dumps({"task": task, "format": CACHE_FORMAT, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, task: str, key: dict[str, Any]) -> Path:
    return Path(cache_dir).expanduser() / f"{task}-{cache_key_hash(task, key)}"


def _load(entry: Path) -> dict[str, datasets.Dataset] | None:
    """Load a complete entry, or None when it is missing or unreadable (then it is rebuilt)."""
    if not (entry / "key.json").is_file():
        return None
    try:
        return {split: datasets.load_from_disk(str(entry / split)) for split in SPLITS}
    except (OSError, ValueError, FileNotFoundError, json.JSONDecodeError):
        return None


def cached_splits(
    cache_dir: str | Path,
    task: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, datasets.Dataset]],
) -> dict[str, datasets.Dataset]:
    """Return the cached splits for (task, key), building them with ``build()`` on a miss."""
    entry = cache_path(cache_dir, task, key)
    loaded = _load(entry)
    if loaded is not None:
        return loaded
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        loaded = _load(entry)  # another job may have finished it while we waited
        if loaded is not None:
            return loaded
        if entry.exists():  # incomplete or corrupted: rebuild
            shutil.rmtree(entry)
        splits = build()
        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            with atomic_dir(entry) as tmp:
                for split in SPLITS:
                    splits[split].save_to_disk(str(tmp / split))
                (tmp / "key.json").write_text(json.dumps({"task": task, **key}, indent=1, sort_keys=True, default=str))
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
    loaded = _load(entry)
    assert loaded is not None, f"cache entry {entry} unreadable right after writing"
    return loaded
