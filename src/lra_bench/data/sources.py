"""Shared pieces of the real-data tasks: finding sources, one-line errors, tokens as Arrow.

The task modules (text, retrieval, image) differ in formats but share the rules for
where to look (``data.root``, else ``paths.data_dir``), how a missing source is reported
(one line: what, where it looked, the setting to change, where to get it), how the Hub is
tried (quickly, and never surfacing its traceback), and how token lists become Arrow
columns without a Python loop over tokens.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lra_bench.data import DataError, DataSettings
from lra_bench.data.cache import cached_splits

WHERE_SETTING = "set data.root=<folder> (or LRA_BENCH_DATA_DIR / paths.data_dir)"
TRUTHY = ("1", "true", "yes", "on")


# --- where to look ----------------------------------------------------------------------------


def candidate_dirs(settings: DataSettings, subdirs: Sequence[str]) -> list[Path]:
    """Folders to search: ``data.root`` and its ``subdirs``
    when set, else ``subdirs`` of ``paths.data_dir``."""
    if settings.data.root:
        base = Path(str(settings.data.root)).expanduser().absolute()
        found = [base, *(base / s for s in subdirs)]
    else:
        base = settings.data_dir.absolute()
        found = [base / s for s in subdirs]
    return list(dict.fromkeys(found))


def release_or_generate(
    source: str, find_release: Callable[[], Path | None], missing_release: Callable[[], DataError]
) -> Path | None:
    """The release folder to read, or None to generate (ListOps, Pathfinder).

    ``generate`` never looks for a release; ``release`` must find one (else ``missing_release()``
    is raised); ``auto`` reads the release when it is found and generates otherwise.
    """
    if source == "generate":
        return None
    folder = find_release()
    if folder is None and source == "release":
        raise missing_release()
    return folder


@dataclass
class Located:
    """A resolved source: ``kind`` (e.g. tree | shards | batches |
    hub), where it is, its files per split, and what to add when the
    Hub fails (for ``auto``: that no local copy was found either)."""

    kind: str
    where: str
    files: dict[str, list[Path]] = field(default_factory=dict)
    hub_hint: str = ""

    def fingerprint(self) -> dict[str, Any]:
        """The part of the cache key that identifies the source's content."""
        if self.kind == "hub":
            return {"source": "hub", "where": self.where}
        files = (p for split in sorted(self.files) for p in self.files[split])
        return {"source": self.kind, "where": self.where, **files_fingerprint(files)}


@dataclass(frozen=True)
class LocalCopy:
    """What a local copy of a Hub dataset is called, where it sits and how to get it."""

    what: str  # e.g. "IMDB"
    hub_name: str
    subdirs: Sequence[str]  # folder names tried under data.root / paths.data_dir
    holds: str  # the folder data.root should hold, e.g. "aclImdb"
    expected: str  # the layout, for the message when none is found
    obtain: str  # where to get it


Finder = Callable[[Path], dict[str, list[Path]] | None]  # a folder -> its files per split


def locate_local_or_hub(
    settings: DataSettings, local: LocalCopy, finders: Sequence[tuple[str, Finder]]
) -> Located:
    """Resolve ``data.source`` (auto | local | hub): the first candidate folder where a finder
    (tried in order) finds files, else the Hub (``auto``) or a DataError (``local``)."""
    source = settings.data.source
    if source == "hub":
        hint = (
            f"use a local copy instead: data.source=local data.root=<folder holding {local.holds}>"
        )
        return Located("hub", local.hub_name, hub_hint=hint)
    looked = candidate_dirs(settings, local.subdirs)
    for folder in (f for f in looked if f.is_dir()):
        for kind, find in finders:
            files = find(folder)
            if files is not None:
                return Located(kind, str(folder), files)
    missing = not_found(local.what, local.expected, looked, local.obtain)
    if source == "local":
        raise DataError(missing)
    return Located("hub", local.hub_name, hub_hint=f"no local copy either: {missing}")


# --- errors ------------------------------------------------------------------------------------


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def not_found(what: str, expected: str, looked_in: Sequence[Path], obtain: str) -> str:
    """The one-line message for a missing local source (a DataError's text)."""
    where = ", ".join(str(p) for p in looked_in)
    return (
        f"{what} not found: looked for {expected} in {where}; {WHERE_SETTING}; get it from {obtain}"
    )


# --- the Hugging Face Hub ----------------------------------------------------------------------


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a download from the Hub can be attempted (a direct TCP probe, a few seconds at most).

    Offline mode (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) and proxies are left to the
    Hub client itself; without them an unreachable Hub would cost many retries.
    """
    if any(
        os.environ.get(v, "").lower() in TRUTHY for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub(name: str, local_hint: str) -> datasets.DatasetDict:
    """``datasets.load_dataset(name)``; any failure becomes
    a one-line DataError ending in ``local_hint``."""
    if not hub_reachable():
        raise DataError(
            f"the Hugging Face Hub is unreachable, so {name} cannot be downloaded; {local_hint}"
        )
    try:
        loaded = datasets.load_dataset(name)
    except Exception as err:  # any Hub/network/format failure is reported the same way
        raise DataError(
            f"could not load {name} from the Hugging Face Hub ({first_line(err)}); {local_hint}"
        ) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"{name} from the Hub is not a dataset with splits; {local_hint}")
    return loaded


def hub_table(
    data: datasets.DatasetDict, name: str, split: str, columns: Sequence[str]
) -> pa.Table:
    """One Hub split as an Arrow table of ``columns`` (raw storage: images stay encoded)."""
    if split not in data:
        raise DataError(f"{name} from the Hub has no {split!r} split (has {', '.join(data)})")
    missing = [c for c in columns if c not in data[split].column_names]
    if missing:
        raise DataError(
            f"{name} {split} from the Hub lacks column(s) {', '.join(missing)} (has "
            f"{', '.join(data[split].column_names)})"
        )
    table = data[split].select_columns(list(columns)).with_format("arrow")[:]
    return table.combine_chunks() if isinstance(table, pa.Table) else pa.table(table)


# --- local files -------------------------------------------------------------------------------


def files_fingerprint(files: Iterable[Path]) -> dict[str, Any]:
    """Digest of paths, sizes and mtimes: a changed or
    replaced source file means a new cache entry."""
    digest, count = hashlib.sha256(), 0
    for path in files:
        st = path.stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count += 1
    return {"files": count, "digest": digest.hexdigest()[:16]}


def split_files(
    folder: Path, split: str, extensions: Sequence[str] = ("parquet", "arrow")
) -> list[Path]:
    """Shards of ``split`` in ``folder`` named as the Hub and its cache name them, sorted.

    Matches ``train-00000-of-00001.parquet``, ``train.parquet``, ``imdb-train.arrow`` and
    ``imdb-train-00000-of-00002.arrow`` (one extension per folder: the first that matches).
    """
    for ext in extensions:
        patterns = (f"{split}-*.{ext}", f"{split}.{ext}", f"*-{split}.{ext}", f"*-{split}-*.{ext}")
        found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
        if found:
            return found
    return []


def find_table_shards(folder: Path, splits: Sequence[str]) -> dict[str, list[Path]] | None:
    """Parquet/Arrow shards for every split in ``folder``,
    ``folder/plain_text`` or ``folder/data``."""
    for sub in (folder, folder / "plain_text", folder / "data"):
        if not sub.is_dir():
            continue
        shards = {split: split_files(sub, split) for split in splits}
        if all(shards.values()):
            return shards
    return None


def _read_one(path: Path, columns: Sequence[str]) -> pa.Table:
    if path.suffix == ".parquet":
        have = pq.read_schema(path).names
        if all(c in have for c in columns):
            return pq.read_table(path, columns=list(columns))
    else:
        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(source).read_all()
        have = table.column_names
        if all(c in have for c in columns):
            return table.select(list(columns))
    missing = [c for c in columns if c not in have]
    raise DataError(
        f"{path}: no column(s) {', '.join(missing)} (has {', '.join(have)}); expected the Hub's "
        f"columns {', '.join(columns)}"
    )


def read_table_shards(files: Sequence[Path], columns: Sequence[str]) -> list[tuple[Path, pa.Table]]:
    """Each shard's ``columns``; unreadable files become a DataError naming the file."""
    out = []
    for path in files:
        try:
            out.append((path, _read_one(path, columns)))
        except (OSError, pa.ArrowException) as err:
            raise DataError(
                f"{path}: not a readable Parquet/Arrow file ({first_line(err)})"
            ) from None
    return out


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels as int64 in ``0..num_classes-1``; the first bad one is named with its row."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{where} row {bad[0] + 1}: label {labels[bad[0]]} is outside 0..{num_classes - 1}"
        )
    return labels.astype(np.int64)


# --- tokens as Arrow ---------------------------------------------------------------------------


def byte_tokens(texts: Sequence[bytes], limit: int) -> pa.ListArray:
    """UTF-8 bytes + 1 (0 stays padding; vocabulary 257), each truncated to ``limit`` bytes."""
    cut = [t[:limit] for t in texts]
    offsets = np.zeros(len(cut) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, cut), dtype=np.int64, count=len(cut)), out=offsets[1:])
    values = np.frombuffer(b"".join(cut), dtype=np.uint8).astype(np.int16) + 1
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)).cast(
        pa.list_(pa.int16())
    )


def fixed_tokens(rows: np.ndarray) -> pa.ListArray:
    """Rows of a ``[N, L]`` array as lists of length ``L`` (element type kept)."""
    n, length = rows.shape
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.ascontiguousarray(rows).reshape(-1))
    )


class SplitWriter:
    """Stream record batches into an Arrow file, then open it memory-mapped as a Dataset.

    Keeps preparation memory bounded by one chunk of rows, whatever the split's size.
    ``source`` names where the rows come from, for the error raised when there are none.
    """

    def __init__(self, path: Path, schema: pa.Schema, source: str) -> None:
        self.path = path
        self.schema = schema
        self.source = source
        self.rows = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def write(self, **columns: pa.Array | np.ndarray) -> None:
        arrays = [
            pa.array(columns[f.name], type=f.type)
            if isinstance(columns[f.name], np.ndarray)
            else columns[f.name]
            for f in self.schema
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def finish(self) -> datasets.Dataset:
        self._writer.close()
        self._sink.close()
        if not self.rows:
            raise DataError(f"no examples in {self.source}")
        return datasets.Dataset.from_file(str(self.path))


def token_schema(*token_columns: str, value_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [*(pa.field(c, pa.list_(value_type)) for c in token_columns), pa.field("label", pa.int64())]
    )


def prepare_cached(
    settings: DataSettings,
    task: str,
    key: dict[str, Any],
    build: Callable[[Path], dict[str, datasets.Dataset]],
) -> dict[str, datasets.Dataset]:
    """``cached_splits`` whose ``build`` gets a scratch
    folder, removed once the entry is written."""
    cache_dir = settings.cache_dir
    scratch = cache_dir / f".scratch-{task}-{uuid.uuid4().hex[:8]}"

    def build_in_scratch() -> dict[str, datasets.Dataset]:
        scratch.mkdir(parents=True, exist_ok=True)
        return build(scratch)

    try:
        return cached_splits(cache_dir, task, key, build_in_scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
