"""Arrow cache of prepared splits: keyed by a hash of every parameter that shapes them.

A cache entry is a folder ``<cache_dir>/<task>-<hash>/`` holding one ``save_to_disk``
folder per split and a ``key.json`` written last (its presence marks the entry complete).
Building happens in a temporary sibling folder renamed into place under a file lock,
so concurrent jobs never see or leave a half-written entry. Loading is memory-mapped.

``key.json`` also records, per split, the row count and a digest (xxh3-128) of every
column's Arrow buffers: validity bitmaps, list offsets and values. Loading recomputes the
digests (one pass at memory speed) and rebuilds the entry, with a one-line notice, when
anything differs or ``key.json`` itself is damaged: changed bytes, or a moved boundary
between two examples, cannot slip through to training. Per split it also keeps the count,
minimum, maximum and sum of every integer column's values, for the record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from lra_bench.errors import DataError
from lra_bench.io import atomic_dir, build_lock

SPLITS = ("train", "val", "test")
CACHE_FORMAT = 2  # part of the folder name; 2: key.json carries per-split summaries


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


def column_digest(column: pa.ChunkedArray) -> str:
    """xxh3-128 of a column's type and, per chunk, its offset, length and every buffer.

    ``Array.buffers()`` lists the children's buffers too, so a list column's offsets (where
    each example ends) are covered as well as its values.
    """
    digest = xxhash.xxh3_128(str(column.type).encode())
    for chunk in column.chunks:
        digest.update(struct.pack("<qq", chunk.offset, len(chunk)))
        for buffer in chunk.buffers():
            if buffer is None:
                digest.update(b"-")
            else:
                digest.update(struct.pack("<q", buffer.size))
                digest.update(buffer)
    return digest.hexdigest()


def split_digest(ds: datasets.Dataset) -> dict[str, Any]:
    """Row count and a digest per column of the split's Arrow table."""
    table = ds.data.table
    return {
        "rows": ds.num_rows,
        "columns": {name: column_digest(table.column(name)) for name in table.column_names},
    }


class _Unusable(Exception):
    """Why a cache entry cannot be used; becomes the rebuild notice."""


def _is_digest(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and type(record.get("rows")) is int
        and isinstance(record.get("columns"), dict)
        and all(isinstance(v, str) for v in record["columns"].values())
    )


def _recorded_digests(entry: Path) -> dict[str, dict[str, Any]]:
    """The per-split digests in ``key.json``; ``_Unusable`` if unreadable or of another shape."""
    try:
        record = json.loads((entry / "key.json").read_text())
    except (OSError, ValueError) as err:
        raise _Unusable(f"key.json is unreadable ({type(err).__name__})") from None
    digests = record.get("digests") if isinstance(record, dict) else None
    if not isinstance(digests, dict) or not all(_is_digest(digests.get(s)) for s in SPLITS):
        raise _Unusable("key.json does not hold a digest per split (damaged, or an older format)")
    return digests


def _verify(split: str, ds: datasets.Dataset, recorded: dict[str, Any]) -> None:
    actual = split_digest(ds)
    if actual["rows"] != recorded["rows"]:
        raise _Unusable(
            f"{split} split has {actual['rows']} rows, key.json records {recorded['rows']}"
        )
    names = sorted(set(actual["columns"]) | set(recorded["columns"]))
    changed = [n for n in names if actual["columns"].get(n) != recorded["columns"].get(n)]
    if changed:
        raise _Unusable(
            f"{split} split does not match the digest recorded in key.json (column {changed[0]})"
        )


def _load(entry: Path) -> tuple[dict[str, datasets.Dataset] | None, str]:
    """Load and verify a complete entry; else None and why (missing, unreadable, mismatch)."""
    if not (entry / "key.json").is_file():
        return None, "incomplete" if entry.exists() else "missing"
    try:
        recorded = _recorded_digests(entry)
        splits = {split: datasets.load_from_disk(str(entry / split)) for split in SPLITS}
        for split in SPLITS:
            _verify(split, splits[split], recorded[split])
    except _Unusable as why:
        return None, str(why)
    except Exception as err:  # any failure to read a damaged entry means: rebuild it
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
            f"data cache {entry} is unreadable right after writing ({why}); check the disk under "
            "paths.cache_dir"
        )
    return loaded


def _write(
    entry: Path, task: str, key: dict[str, Any], splits: dict[str, datasets.Dataset]
) -> None:
    """Save the splits and then ``key.json`` (with their digests) into ``entry`` at once."""
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with atomic_dir(entry) as tmp:
            summaries, digests = {}, {}
            for split in SPLITS:
                splits[split].save_to_disk(str(tmp / split))
                saved = datasets.load_from_disk(str(tmp / split))
                summaries[split], digests[split] = split_summary(saved), split_digest(saved)
            record = {"task": task, **key, "summaries": summaries, "digests": digests}
            (tmp / "key.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
