"""Retrieval (ACL Anthology Network citation pairs, byte level) as LRA defines it.

Source: the LRA release's ``tsv_data/new_aan_pairs.{train,eval,test}.tsv``: no header,
five tab-separated fields ``label id1 id2 text1 text2`` (the label may read ``1.0``).
Each document keeps its first 10,000 bytes (as LRA's reader), then becomes bytes + 1
(vocabulary 257, 0 = padding) truncated to ``data.max_bytes`` (4000). ``eval`` is the
dev split. ``data.root`` may point at the outer ``lra_release``, the inner
``lra_release/lra_release`` or ``tsv_data`` itself.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from lra_bench.data import DataError, DataSettings
from lra_bench.data.sources import (
    SplitWriter,
    byte_tokens,
    candidate_dirs,
    files_fingerprint,
    not_found,
    prepare_cached,
    token_schema,
)

TASK = "retrieval"
FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
SUBDIRS = ("tsv_data", "lra_release/tsv_data", "lra_release/lra_release/tsv_data")
URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz (the LRA release)"
DOC_BYTES = 10_000  # LRA's reader keeps the first 10,000 bytes of each document
FIELDS = "label id1 id2 text1 text2"
READER_VERSION = 1  # bump when the parsing or tokenisation below changes
CHUNK = 2048  # pairs per Arrow record batch
BLANK = (b"", b"\n", b"\r\n")


def locate(settings: DataSettings) -> dict[str, Path]:
    """The three TSV files from the first candidate folder
    that holds them (every source reads local files)."""
    looked = candidate_dirs(settings, SUBDIRS)
    for folder in looked:
        paths = {split: folder / name for split, name in FILES.items()}
        present = [p.is_file() for p in paths.values()]
        if all(present):
            return paths
        if any(present):
            gap = next(p for p, ok in zip(paths.values(), present, strict=True) if not ok)
            raise DataError(
                f"incomplete AAN data in {folder}: {gap.name} is missing; get the full release "
                f"from {URL}"
            )
    raise DataError(not_found("AAN pairs", "new_aan_pairs.{train,eval,test}.tsv", looked, URL))


def parse_label(field: bytes, path: Path, lineno: int) -> int:
    try:
        value = float(field)
    except ValueError:
        value = float("nan")
    if value not in (0.0, 1.0):
        shown = field[:20].decode("utf-8", "replace")
        raise DataError(
            f"{path}:{lineno}: label {shown!r} is not 0 or 1 (expected {FIELDS}, tab-separated)"
        )
    return int(value)


def read_split(path: Path, writer: SplitWriter, limit: int) -> None:
    """Parse one TSV into ``writer``; a malformed line stops with its file and line number."""
    docs1: list[bytes] = []
    docs2: list[bytes] = []
    labels: list[int] = []

    def flush() -> None:
        writer.write(
            input_ids_1=byte_tokens(docs1, limit),
            input_ids_2=byte_tokens(docs2, limit),
            label=np.array(labels, dtype=np.int64),
        )
        docs1.clear(), docs2.clear(), labels.clear()

    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line in BLANK:
                continue
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 5:
                raise DataError(
                    f"{path}:{lineno}: expected 5 tab-separated fields ({FIELDS}), found "
                    f"{len(fields)}"
                )
            labels.append(parse_label(fields[0], path, lineno))
            docs1.append(fields[3][:DOC_BYTES])
            docs2.append(fields[4][:DOC_BYTES])
            if len(labels) == CHUNK:
                flush()
    if labels:
        flush()


def build(paths: dict[str, Path], limit: int, scratch: Path) -> dict[str, datasets.Dataset]:
    schema = token_schema("input_ids_1", "input_ids_2", value_type=pa.int16())
    out = {}
    for split, path in paths.items():
        writer = SplitWriter(scratch / f"{split}.arrow", schema, str(path))
        read_split(path, writer, limit)
        out[split] = writer.finish()
    return out


def prepare(settings: DataSettings) -> dict[str, datasets.Dataset]:
    """AAN splits ``train``/``val``/``test`` with
    ``input_ids_1``, ``input_ids_2`` and ``label`` (cached)."""
    paths = locate(settings)
    limit = settings.data.max_bytes
    key = {
        "reader": READER_VERSION,
        "source": "tsv",
        "where": str(paths["train"].parent),
        "fingerprint": files_fingerprint(paths.values()),
        "doc_bytes": DOC_BYTES,
        "max_bytes": limit,
    }
    return prepare_cached(settings, TASK, key, lambda scratch: build(paths, limit, scratch))
