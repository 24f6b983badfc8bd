"""ListOps: the LRA release TSVs (or generated ones in the same format) as cached Arrow splits.

Release layout: ``listops-1000/basic_{train,val,test}.tsv``, header ``Source\\tTarget``,
Source like ``( ( ( [MAX 4 ) 5 ) ] )``. Tokenising keeps the bracket structure: ``]``
becomes ``X``, parentheses are dropped, tokens are split on spaces. Generated data is
written in the same format and read back by the same reader, so both go through one path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from lra_bench.data import DataError, DataSettings
from lra_bench.data.cache import SPLITS, cache_key_hash, cached_splits
from lra_bench.data.generators import listops as gen
from lra_bench.data.sources import release_or_generate
from lra_bench.data.tasks import LISTOPS_LENGTHS
from lra_bench.io import build_dir_once

if TYPE_CHECKING:
    from lra_bench.config import DataConfig

RELEASE_FOLDER = "listops-1000"
SPLIT_FILES = gen.SPLIT_FILES
RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"

PAD = 0
TOKENS = ("[MIN", "[MAX", "[MED", "[SM", "X", *"0123456789")
UNK = len(TOKENS) + 1  # 16; vocabulary size 17
NUM_CLASSES = 10
DEFAULT_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}
GENERATOR_VERSION = 1  # bump when the generator's output for given settings changes
READER_VERSION = 1  # bump when tokenisation changes


class _Vocab(dict):
    """Token bytes -> id; unknown tokens map to UNK (used through the fast ``dict.__getitem__``)."""

    def __missing__(self, key: bytes) -> int:
        return UNK


VOCAB = _Vocab({tok.encode(): i + 1 for i, tok in enumerate(TOKENS)})
_BRACKET_TO_X = bytes.maketrans(b"]", b"X")
HEADER = ("Source", "Target")


def tokenize(source: bytes | str) -> np.ndarray:
    """Token ids (uint8) of one Source: ``]`` -> ``X``, ``(`` and ``)`` dropped, split on spaces."""
    if isinstance(source, str):
        source = source.encode()
    tokens = source.translate(_BRACKET_TO_X, b"()").split()
    return np.fromiter(map(VOCAB.__getitem__, tokens), dtype=np.uint8, count=len(tokens))


def _bad(path: Path, lineno: int, expected: str, got: bytes) -> DataError:
    text = got.decode("utf-8", "replace")
    if len(text) > 60:
        text = text[:60] + "..."
    return DataError(f"{path}:{lineno}: expected {expected}, got {text!r}")


def read_tsv(path: str | Path, max_len: int) -> datasets.Dataset:
    """Read one release-format TSV into a Dataset (``input_ids`` unpadded, truncated; ``label``)."""
    path = Path(path)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    with open(path, "rb") as f, tqdm(desc=f"reading {path.name}", unit="ex", leave=False) as bar:
        header = f.readline().rstrip(b"\r\n")
        if tuple(header.split(b"\t")) != tuple(h.encode() for h in HEADER):
            raise _bad(path, 1, "the header 'Source<TAB>Target'", header)
        for lineno, raw in enumerate(f, start=2):
            line = raw.rstrip(b"\r\n")
            fields = line.split(b"\t")
            if len(fields) != 2:
                raise _bad(
                    path,
                    lineno,
                    f"2 tab-separated fields (Source, Target), found {len(fields)}",
                    line,
                )
            source, target = fields
            try:
                label = int(target)
            except ValueError:
                raise _bad(path, lineno, "an integer Target in 0..9", target) from None
            if not 0 <= label < NUM_CLASSES:
                raise _bad(path, lineno, "an integer Target in 0..9", target)
            ids = tokenize(source)
            if len(ids) == 0:
                raise _bad(path, lineno, "a non-empty Source", source)
            arrays.append(ids[:max_len])
            labels.append(label)
            bar.update()
    if not arrays:
        raise DataError(f"{path}: expected at least one example after the header, found none")
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(arrays)))
    table = pa.table({"input_ids": input_ids, "label": pa.array(labels, type=pa.int64())})
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def read_folder(folder: Path, max_len: int) -> dict[str, datasets.Dataset]:
    """The three splits of a ``listops-1000``-style folder."""
    return {split: read_tsv(folder / SPLIT_FILES[split], max_len) for split in SPLITS}


# --- where the data comes from -------------------------------------------------------


def _release_candidates(settings: DataSettings) -> list[Path]:
    if settings.data.root:
        root = Path(str(settings.data.root)).expanduser()
        return [root / RELEASE_FOLDER, root, root / "lra_release" / RELEASE_FOLDER]
    return [settings.data_dir / "lra_release" / RELEASE_FOLDER, settings.data_dir / RELEASE_FOLDER]


def find_release(settings: DataSettings) -> Path | None:
    """The release folder holding ``basic_train.tsv``, or None; raises if it lacks a split."""
    for folder in _release_candidates(settings):
        if (folder / SPLIT_FILES["train"]).is_file():
            missing = [name for name in SPLIT_FILES.values() if not (folder / name).is_file()]
            if missing:
                raise DataError(
                    f"ListOps release folder {folder} lacks {', '.join(missing)}; restore it from"
                    f" {RELEASE_URL} or use data.source=generate"
                )
            return folder
    return None


def _missing_release(settings: DataSettings) -> DataError:
    where = _release_candidates(settings)[0].absolute()
    return DataError(
        f"ListOps release files not found: looked for {where}/basic_{{train,val,test}}.tsv;"
        f" set data.root=<folder holding {RELEASE_FOLDER}/> or LRA_BENCH_DATA_DIR=<folder holding"
        f" lra_release/> (download: {RELEASE_URL}), or use data.source=generate, which needs no "
        "download"
    )


def split_sizes(data: DataConfig) -> dict[str, int]:
    """Generated split sizes: LRA's 96k/2k/2k, ``data.size`` split 96/2/2, ``data.*_size`` each."""
    sizes = dict(DEFAULT_SIZES)
    if data.size is not None:
        held = max(1, round(data.size * 0.02))
        sizes = {"train": data.size - 2 * held, "val": held, "test": held}
    requested = {"train": data.train_size, "val": data.val_size, "test": data.test_size}
    sizes.update({split: value for split, value in requested.items() if value is not None})
    return sizes


def generator_params(data: DataConfig) -> dict[str, Any]:
    """Every setting that shapes the generated TSVs (worker count excluded: it does not)."""
    default_min, default_max = LISTOPS_LENGTHS
    return {
        "version": GENERATOR_VERSION,
        "seed": data.gen_seed,
        "min_length": default_min if data.min_length is None else data.min_length,
        "max_length": default_max if data.max_length is None else data.max_length,
        "sizes": split_sizes(data),
    }


def generated_folder(settings: DataSettings) -> Path:
    """Folder of the generated TSVs under ``paths.cache_dir``, keyed by the generator settings."""
    params = generator_params(settings.data)
    return settings.cache_dir / f"listops-generated-{cache_key_hash('listops-generated', params)}"


def ensure_generated(settings: DataSettings) -> Path:
    """Generate the TSVs once (under a file lock, built aside and renamed into place)."""
    params = generator_params(settings.data)

    def fill(tmp: Path) -> None:
        try:
            stats = gen.generate(
                tmp,
                params["sizes"],
                seed=params["seed"],
                min_length=params["min_length"],
                max_length=params["max_length"],
                workers=settings.data.gen_workers,
            )
        except ValueError as err:
            raise DataError(f"ListOps generation failed: {err}") from None
        info = {**params, "draws": stats.draws, "kept": stats.kept, "duplicates": stats.duplicates}
        (tmp / "params.json").write_text(json.dumps(info, indent=1, sort_keys=True))

    return build_dir_once(generated_folder(settings), "params.json", fill)


def _file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def prepare(settings: DataSettings) -> dict[str, datasets.Dataset]:
    """ListOps splits ``train``/``val``/``test`` from the release or the generator, cached."""
    max_len = settings.task.max_len
    folder = release_or_generate(
        settings.data.source, lambda: find_release(settings), lambda: _missing_release(settings)
    )
    key: dict[str, Any] = {
        "source": "generate" if folder is None else "release",
        "max_len": max_len,
        "reader": READER_VERSION,
    }
    if folder is not None:
        key["files"] = {name: _file_stamp(folder / name) for name in SPLIT_FILES.values()}
        release = folder

        def build() -> dict[str, datasets.Dataset]:
            return read_folder(release, max_len)

    else:
        key["generator"] = generator_params(settings.data)

        def build() -> dict[str, datasets.Dataset]:
            return read_folder(ensure_generated(settings), max_len)

    return cached_splits(settings.cache_dir, "listops", key, build)
