"""Text (IMDB reviews, byte level) as LRA defines it.

Tokens are the review's UTF-8 bytes + 1 (vocabulary 257, 0 = padding), truncated to
``data.max_bytes`` (4000); the model pads to ``task.max_len`` (4096). Labels: 0 negative,
1 positive. LRA evaluates on the test set as its dev set too (``data.dev_split=default``);
``data.dev_split=heldout`` instead holds out a seeded ``data.heldout_fraction`` of train.

Sources (``data.source``): ``local`` is an ``aclImdb/{train,test}/{pos,neg}/*.txt`` tree
(file names sorted, negatives first) or the Hub's Parquet/Arrow shards
(``plain_text/{train,test}-*.parquet``, columns ``text``, ``label``); ``hub`` downloads
``stanfordnlp/imdb``; ``auto`` uses a local copy when there is one, else the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from lra_bench.config import DataConfig
from lra_bench.data import DataError, DataSettings
from lra_bench.data.sources import (
    LocalCopy,
    Located,
    SplitWriter,
    byte_tokens,
    check_labels,
    find_table_shards,
    hub_table,
    load_hub,
    locate_local_or_hub,
    prepare_cached,
    read_table_shards,
    token_schema,
)

TASK = "text"
HUB_NAME = "stanfordnlp/imdb"
URL = (
    "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz "
    "(or the Hub's stanfordnlp/imdb)"
)
SUBDIRS = ("aclImdb", "imdb")
SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}
EXPECTED = "an aclImdb/{train,test}/{pos,neg}/*.txt tree or {train,test}-*.parquet shards"
LOCAL = LocalCopy("IMDB", HUB_NAME, SUBDIRS, "aclImdb", EXPECTED, URL)
READER_VERSION = 1  # bump when the reading or tokenisation below changes
CHUNK = 4096  # reviews per Arrow record batch


def tree_files(folder: Path) -> dict[str, list[Path]] | None:
    """The review files of an aclImdb tree
    (``<split>/<neg|pos>/*.txt``, sorted), or None if not a tree."""
    wanted = [folder / split / label for split in SPLITS for label in LABELS]
    present = [d.is_dir() for d in wanted]
    if not any(present):
        return None
    if not all(present):
        gap = next(d for d, ok in zip(wanted, present, strict=True) if not ok)
        raise DataError(
            f"incomplete aclImdb tree in {folder}: {gap} is missing; unpack the full archive from "
            f"{URL}"
        )
    files: dict[str, list[Path]] = {}
    for split in SPLITS:
        files[split] = []
        for label in LABELS:
            with os.scandir(folder / split / label) as it:
                names = sorted(e.name for e in it if e.name.endswith(".txt") and e.is_file())
            if not names:
                raise DataError(
                    f"empty folder {folder / split / label} in the aclImdb tree (no *.txt "
                    "reviews): training would see one class only; "
                    f"unpack the full archive from {URL}"
                )
            files[split] += [folder / split / label / name for name in names]
    return files


def locate(settings: DataSettings) -> Located:
    """Resolve ``data.source`` (auto | local | hub): a local copy (an aclImdb tree before Parquet
    shards; ``auto`` tries one first) or the Hub."""
    finders = [("tree", tree_files), ("shards", lambda folder: find_table_shards(folder, SPLITS))]
    return locate_local_or_hub(settings, LOCAL, finders)


def dev_settings(data: DataConfig) -> dict[str, Any]:
    """The dev-split part of the cache key."""
    if data.dev_split == "default":
        return {"dev_split": "test"}
    return {
        "dev_split": "heldout",
        "heldout_fraction": float(data.heldout_fraction),
        "split_seed": data.split_seed,
    }


# --- reading ------------------------------------------------------------------------------------


def write_texts(writer: SplitWriter, texts: list[bytes], labels: np.ndarray, limit: int) -> None:
    for start in range(0, len(texts), CHUNK):
        writer.write(
            input_ids=byte_tokens(texts[start : start + CHUNK], limit),
            label=labels[start : start + CHUNK],
        )


def tree_split(files: list[Path], writer: SplitWriter, limit: int) -> None:
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        labels = np.array([LABELS[p.parent.name] for p in chunk], dtype=np.int64)
        write_texts(writer, [p.read_bytes() for p in chunk], labels, limit)


def table_split(tables: list[tuple[str, pa.Table]], writer: SplitWriter, limit: int) -> None:
    """Rows of Hub-format tables (``text`` string, ``label`` int) into ``writer``."""
    for where, table in tables:
        text, label = table.column("text"), table.column("label")
        if text.null_count or label.null_count:
            col = text if text.null_count else label
            row = next(i for i, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{where} row {row + 1}: empty {'text' if col is text else 'label'}")
        labels = check_labels(label.to_numpy().astype(np.int64), 2, where)
        write_texts(writer, [s.encode("utf-8") for s in text.to_pylist()], labels, limit)


def build(data: DataConfig, located: Located, scratch: Path) -> dict[str, datasets.Dataset]:
    limit = data.max_bytes
    schema = token_schema("input_ids", value_type=pa.int16())
    hub = load_hub(HUB_NAME, located.hub_hint) if located.kind == "hub" else None
    out: dict[str, datasets.Dataset] = {}
    for split in SPLITS:
        origin = f"{located.where} ({split})" if located.kind != "hub" else f"{HUB_NAME} {split}"
        writer = SplitWriter(scratch / f"{split}.arrow", schema, origin)
        if located.kind == "tree":
            tree_split(located.files[split], writer, limit)
        elif located.kind == "shards":
            table_split(
                [
                    (str(p), t)
                    for p, t in read_table_shards(located.files[split], ("text", "label"))
                ],
                writer,
                limit,
            )
        else:
            assert hub is not None
            table_split(
                [(f"{HUB_NAME} {split}", hub_table(hub, HUB_NAME, split, ("text", "label")))],
                writer,
                limit,
            )
        out[split] = writer.finish()
    return dev_split(data, out["train"], out["test"])


def dev_split(
    data: DataConfig, train: datasets.Dataset, test: datasets.Dataset
) -> dict[str, datasets.Dataset]:
    """LRA: dev = test; ``heldout``: a seeded ``heldout_fraction``
    of train (both parts keep file order)."""
    settings = dev_settings(data)
    if settings["dev_split"] == "test":
        return {"train": train, "val": test, "test": test}
    n = len(train)
    n_val = max(1, round(settings["heldout_fraction"] * n))
    perm = np.random.default_rng(settings["split_seed"]).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return {"train": train.select(train_idx), "val": train.select(val_idx), "test": test}


def prepare(settings: DataSettings) -> dict[str, datasets.Dataset]:
    """IMDB splits ``train``/``val``/``test`` with byte
    tokens ``input_ids`` and ``label`` (cached)."""
    located = locate(settings)
    key = {
        "reader": READER_VERSION,
        **located.fingerprint(),
        "max_bytes": settings.data.max_bytes,
        **dev_settings(settings.data),
    }
    return prepare_cached(
        settings, TASK, key, lambda scratch: build(settings.data, located, scratch)
    )
