"""Image (CIFAR-10, grayscale pixels as tokens) as LRA defines it.

Each 32x32 image becomes 1024 grayscale pixels in row-major order; the pixel values
0..255 are the tokens (vocabulary 256) and nothing is padding: a black pixel is token 0,
a real token. Splits: train = the first 90% of the training set (45,000), dev = its last
10% (5,000), test = the test set (10,000).

Grayscale reproduces ``tf.image.rgb_to_grayscale`` on uint8 images, which LRA used: in
float32, ``x * (1/255)``, weighted sum with (0.2989, 0.5870, 0.1140), then ``* 255.5``
and truncation to uint8 (so values round up from about .4 of a level, not at .5).

Sources (``data.source``): ``local`` is a ``cifar-10-batches-py`` folder (the python
pickles ``data_batch_1..5`` and ``test_batch``, read by an unpickler that only admits
numpy array reconstruction) or the Hub's Parquet shards (``plain_text/{train,test}-*.parquet``
with ``img`` = PNG bytes and ``label``); ``hub`` downloads ``uoft-cs/cifar10``; ``auto``
prefers a local copy.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from lra_bench.data import DataError, DataSettings
from lra_bench.data.sources import (
    LocalCopy,
    Located,
    SplitWriter,
    check_labels,
    find_table_shards,
    first_line,
    fixed_tokens,
    hub_table,
    load_hub,
    locate_local_or_hub,
    prepare_cached,
    read_table_shards,
    token_schema,
)

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

TASK = "image"
HUB_NAME = "uoft-cs/cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (or the Hub's uoft-cs/cifar10)"
SUBDIRS = ("cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
EXPECTED = "cifar-10-batches-py (data_batch_1..5, test_batch) or {train,test}-*.parquet shards"
LOCAL = LocalCopy("CIFAR-10", HUB_NAME, SUBDIRS, "cifar-10-batches-py", EXPECTED, URL)
SIDE = 32
NUM_CLASSES = 10
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # tf.image.rgb_to_grayscale
DEV_FRACTION = 0.1  # LRA: dev = train[90%:]
READER_VERSION = 1  # bump when the reading or the grayscale rule below changes
CHUNK = 2048  # images decoded per step (PNG sources)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickles of protocols 0-2 use it for bytes (``latin1`` only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


# The only globals a CIFAR-10 python batch refers to: numpy array reconstruction, and the
# string-to-bytes step that Python 3 pickles of protocols 0-2 use for the array bytes.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside ``ALLOWED_GLOBALS``."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches only: any global other
    than numpy array reconstruction is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` RGB -> uint8 gray, exactly as
    ``tf.image.rgb_to_grayscale`` (float32 arithmetic)."""
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = x[..., 0] * GRAY_WEIGHTS[0] + x[..., 1] * GRAY_WEIGHTS[1] + x[..., 2] * GRAY_WEIGHTS[2]
    return (gray * np.float32(255.5)).astype(np.uint8)


# --- python pickle batches ---------------------------------------------------------------------


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels uint8 [N, 3072] as R, G, B planes, labels int64 [N])`` of one pickled batch."""
    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="bytes").load()
    except RefusedGlobal as err:
        raise DataError(
            f"{path}: refused to unpickle: it refers to {err}, but a CIFAR-10 batch holds only "
            "numpy arrays and lists"
        ) from None
    except Exception as err:  # any other failure means the file is not a batch
        raise DataError(f"{path}: not a CIFAR-10 python batch ({first_line(err)})") from None
    if isinstance(batch, dict):  # a batch re-pickled by Python 3 may have str keys
        batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * SIDE * SIDE
    ):
        raise DataError(
            f"{path}: expected a dict with b'data' = uint8 array [N, 3072] (a CIFAR-10 python "
            "batch)"
        )
    if (
        not isinstance(labels, list)
        or len(labels) != len(data)
        or not all(isinstance(v, int) for v in labels)
    ):
        raise DataError(
            f"{path}: expected b'labels' = a list of {len(data)} ints (a CIFAR-10 python batch)"
        )
    return data, check_labels(np.array(labels, dtype=np.int64), NUM_CLASSES, str(path))


def batch_files(folder: Path) -> dict[str, list[Path]] | None:
    """The pickled batches in ``folder``, or None when it holds none of them."""
    files = {split: [folder / name for name in names] for split, names in BATCHES.items()}
    present = [p.is_file() for names in files.values() for p in names]
    if not any(present):
        return None
    if not all(present):
        gap = next(
            p
            for p, ok in zip((p for v in files.values() for p in v), present, strict=True)
            if not ok
        )
        raise DataError(
            f"incomplete cifar-10-batches-py in {folder}: {gap.name} is missing; get it from {URL}"
        )
    return files


def pickled_split(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = [], []
    for path in files:
        data, lab = load_batch(path)
        planes = data.reshape(len(data), 3, SIDE * SIDE)
        pixels.append(grayscale(np.moveaxis(planes, 1, -1)))
        labels.append(lab)
    return np.concatenate(pixels), np.concatenate(labels)


# --- PNG tables (Hub Parquet shards, or the Hub itself) -------------------------------------------


def decode_png(blob: bytes | None, where: str, row: int) -> np.ndarray:
    if blob is None:
        raise DataError(f"{where} row {row}: image has no embedded bytes")
    try:
        with Image.open(io.BytesIO(blob)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises many kinds
        raise DataError(f"{where} row {row}: not a decodable image ({first_line(err)})") from None
    if rgb.shape[:2] != (SIDE, SIDE):
        raise DataError(
            f"{where} row {row}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected {SIDE}x{SIDE}"
        )
    return rgb


def table_split(tables: list[tuple[str, pa.Table]]) -> tuple[np.ndarray, np.ndarray]:
    """Hub-format tables (``img`` struct of PNG ``bytes``, ``label``) -> gray pixels and labels."""
    pixels, labels = [], []
    for where, table in tables:
        img, label = table.column("img").combine_chunks(), table.column("label")
        if not pa.types.is_struct(img.type) or img.type.get_field_index("bytes") < 0:
            raise DataError(
                f"{where}: column img is {img.type}, expected the Hub's image struct "
                f"{{bytes, path}}"
            )
        if label.null_count:
            raise DataError(f"{where}: column label has empty values")
        blobs = img.field("bytes").to_pylist()
        for start in range(0, len(blobs), CHUNK):
            rgb = np.stack(
                [
                    decode_png(b, where, start + i + 1)
                    for i, b in enumerate(blobs[start : start + CHUNK])
                ]
            )
            pixels.append(grayscale(rgb).reshape(len(rgb), SIDE * SIDE))
        labels.append(check_labels(label.to_numpy().astype(np.int64), NUM_CLASSES, where))
    return np.concatenate(pixels), np.concatenate(labels)


# --- sources and splits ------------------------------------------------------------------------


def locate(settings: DataSettings) -> Located:
    """Resolve ``data.source`` (auto | local | hub): pickled batches,
    Parquet shards (``auto`` tries these first) or the Hub."""
    finders = [
        ("batches", batch_files),
        ("shards", lambda folder: find_table_shards(folder, ("train", "test"))),
    ]
    return locate_local_or_hub(settings, LOCAL, finders)


def read_split(
    located: Located, split: str, hub: datasets.DatasetDict | None
) -> tuple[np.ndarray, np.ndarray]:
    if located.kind == "batches":
        return pickled_split(located.files[split])
    if located.kind == "shards":
        return table_split(
            [(str(p), t) for p, t in read_table_shards(located.files[split], ("img", "label"))]
        )
    assert hub is not None
    return table_split([(f"{HUB_NAME} {split}", hub_table(hub, HUB_NAME, split, ("img", "label")))])


def build(located: Located, scratch: Path) -> dict[str, datasets.Dataset]:
    hub = load_hub(HUB_NAME, located.hub_hint) if located.kind == "hub" else None
    train_px, train_y = read_split(located, "train", hub)
    test_px, test_y = read_split(located, "test", hub)
    n_train = len(train_px) - max(
        1, round(DEV_FRACTION * len(train_px))
    )  # 50,000 -> 45,000 + 5,000
    parts = {
        "train": (train_px[:n_train], train_y[:n_train]),
        "val": (train_px[n_train:], train_y[n_train:]),
        "test": (test_px, test_y),
    }
    schema = token_schema("input_ids", value_type=pa.uint8())
    out = {}
    for split, (px, y) in parts.items():
        writer = SplitWriter(scratch / f"{split}.arrow", schema, f"{located.where} ({split})")
        for start in range(0, len(px), 8192):
            writer.write(
                input_ids=fixed_tokens(px[start : start + 8192]), label=y[start : start + 8192]
            )
        out[split] = writer.finish()
    return out


def prepare(settings: DataSettings) -> dict[str, datasets.Dataset]:
    """CIFAR-10 splits ``train``/``val``/``test``: 1024 gray
    pixel tokens ``input_ids`` and ``label`` (cached)."""
    located = locate(settings)
    key = {
        "reader": READER_VERSION,
        **located.fingerprint(),
        "gray": "tf.image.rgb_to_grayscale",
        "dev_fraction": DEV_FRACTION,
    }
    return prepare_cached(settings, TASK, key, lambda scratch: build(located, scratch))
