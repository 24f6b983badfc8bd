"""Tiny copies of the real data formats (IMDB, AAN, CIFAR-10), written byte for byte as released.

Used by the data tests and by throughput measurements (the writers take sizes).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig
from PIL import Image

from lra_bench.compose import compose_config

# --- configs -------------------------------------------------------------------------------------


def compose(task: str, root: Path | None, cache: Path, *extra: str) -> DictConfig:
    """The config of ``python -m lra_bench task=<task> data.source=local data.root=<root> ...``."""
    overrides = [f"task={task}", f"paths.cache_dir={cache}"]
    if root is not None:
        overrides += ["data.source=local", f"data.root={root}"]
    return compose_config([*overrides, *extra])


def smoke_overrides(tmp: Path) -> list[str]:
    """A seconds-long run; one thread, since tiny models only lose time to thread hand-offs."""
    return [
        "trainer=smoke",
        "trainer.threads=1",
        "attn=skyformer",
        "attn.num_landmarks=16",
        f"paths.run_dir={tmp / 'run'}",
        f"paths.leaderboard={tmp / 'lb.csv'}",
    ]


def smoke_run(cfg: DictConfig) -> dict:
    """``train.run(cfg)``, restoring torch's thread count
    afterwards (``trainer.threads`` sets it globally)."""
    import torch

    from lra_bench.train import run

    threads = torch.get_num_threads()
    try:
        return run(cfg)
    finally:
        torch.set_num_threads(threads)


def byte_ids(text: str | bytes) -> list[int]:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return [b + 1 for b in data]


# --- IMDB ----------------------------------------------------------------------------------------

REVIEWS = {
    "train": [
        (
            "neg",
            "0_3.txt",
            "A dull film.<br /><br />The plot drags and the acting is wooden throughout.",
        ),
        (
            "neg",
            "1_2.txt",
            "Naïve script, clichéd score; I wanted my two hours back — truly awful.",
        ),
        (
            "neg",
            "2_1.txt",
            "Worst remake ever made 😞 nothing works, not even the soundtrack at all.",
        ),
        (
            "pos",
            "0_9.txt",
            "Brilliant! The café scene alone is worth the ticket, a real crowd pleaser.",
        ),
        (
            "pos",
            "1_8.txt",
            "日本語の字幕も良かった。 A moving story with a wonderful cast and direction.",
        ),
        (
            "pos",
            "2_10.txt",
            "Superb pacing, lovely photography, and a score that lingers for days.",
        ),
    ],
    "test": [
        ("neg", "0_4.txt", "Forgettable and far too long; the ending makes no sense whatsoever."),
        ("neg", "1_1.txt", "Terrible dialogue. Über-predictable twists that anyone could spot."),
        ("pos", "0_7.txt", "Charming, funny and warm — the best comedy I have seen this year ✓."),
        ("pos", "1_10.txt", "A masterpiece of quiet tension; every frame is carefully composed."),
    ],
}
LABEL = {"neg": 0, "pos": 1}


def imdb_rows(reviews: dict = REVIEWS) -> dict[str, list[tuple[str, int]]]:
    """(text, label) per split in the reader's order: negatives first, file names sorted."""
    return {
        split: [
            (text, LABEL[lab]) for lab, _, text in sorted(rows, key=lambda r: (LABEL[r[0]], r[1]))
        ]
        for split, rows in reviews.items()
    }


def write_aclimdb(folder: Path, reviews: dict = REVIEWS) -> Path:
    """An ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` tree (plus the ignored ``unsup``)."""
    for split, rows in reviews.items():
        for lab in LABEL:
            (folder / split / lab).mkdir(parents=True, exist_ok=True)
        for lab, name, text in rows:
            (folder / split / lab / name).write_bytes(text.encode("utf-8"))
    (folder / "train" / "unsup").mkdir(exist_ok=True)
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled review", encoding="utf-8")
    (folder / "imdb.vocab").write_text("the\nfilm\n", encoding="utf-8")
    return folder


def write_imdb_parquet(folder: Path, rows: dict[str, list[tuple[str, int]]] | None = None) -> Path:
    """The Hub's layout: ``plain_text/{train,test,unsupervised}-00000-of-00001.parquet``."""
    rows = rows if rows is not None else imdb_rows()
    (folder / "plain_text").mkdir(parents=True, exist_ok=True)
    for split, pairs in {**rows, "unsupervised": [("unlabelled review", -1)]}.items():
        table = pa.table(
            {"text": [t for t, _ in pairs], "label": pa.array([y for _, y in pairs], pa.int64())}
        )
        pq.write_table(table, folder / "plain_text" / f"{split}-00000-of-00001.parquet")
    return folder


def synthetic_aclimdb(
    folder: Path, per_split: int, review_bytes: int = 1200, seed: int = 0
) -> Path:
    """A full-format tree of ``per_split`` random reviews of about ``review_bytes`` each."""
    rng = np.random.default_rng(seed)
    words = np.array(
        ["the", "film", "was", "très", "good", "bad", "plot", "actor", "scene", "<br", "/>"]
    )
    reviews = {}
    for split in ("train", "test"):
        rows = []
        for i in range(per_split):
            text = " ".join(rng.choice(words, size=review_bytes // 5))
            rows.append(("pos" if i % 2 else "neg", f"{i}_{1 + i % 10}.txt", text))
        reviews[split] = rows
    return write_aclimdb(folder, reviews)


# --- AAN -----------------------------------------------------------------------------------------


def aan_line(label: str, id1: str, id2: str, text1: bytes, text2: bytes) -> bytes:
    return b"\t".join([label.encode(), id1.encode(), id2.encode(), text1, text2]) + b"\n"


def write_aan(folder: Path, rows: dict[str, Sequence[tuple[str, str, str, bytes, bytes]]]) -> Path:
    """``new_aan_pairs.{train,eval,test}.tsv`` in ``folder`` (a ``tsv_data`` folder): no header."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": "train", "val": "eval", "test": "test"}
    for split, lines in rows.items():
        (folder / f"new_aan_pairs.{names[split]}.tsv").write_bytes(
            b"".join(aan_line(*r) for r in lines)
        )
    return folder


def aan_rows(seed: int = 0) -> dict[str, list[tuple[str, str, str, bytes, bytes]]]:
    """A few pairs per split; labels as the release writes
    them (``1.0``/``0.0``), long and non-ASCII texts."""
    rng = np.random.default_rng(seed)

    def doc(n: int) -> bytes:
        return (
            "Ünïcode ✓ " + " ".join(rng.choice(["parsing", "corpus", "tree", "bank"], size=n))
        ).encode()

    long_doc = bytes(range(32, 127)) * 140  # 13,300 bytes: past the 10,000-byte cut
    rows = {
        "train": [
            ("1.0", "P00-1001", "J93-2004", long_doc, doc(30)),
            ("0.0", "P00-1002", "W99-0613", doc(20), long_doc),
        ],
        "val": [
            ("1.0", "E03-1005", "P02-1017", doc(25), doc(15)),
            ("0", "E03-1006", "C00-2136", doc(12), doc(40)),
        ],
        "test": [
            ("1", "N04-1001", "P97-1003", doc(18), doc(22)),
            ("0.0", "N04-1002", "A00-2018", doc(35), doc(10)),
        ],
    }
    rows["train"] += [
        (str(float(i % 2)), f"X{i:02d}-0001", f"Y{i:02d}-0002", doc(10 + i), doc(30 - i))
        for i in range(10)
    ]
    return rows


def synthetic_aan(folder: Path, pairs: int, doc_bytes: int = 10_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz  .,", dtype=np.uint8)
    rows = []
    for i in range(pairs):
        t1, t2 = (alphabet[rng.integers(0, len(alphabet), doc_bytes)].tobytes() for _ in range(2))
        rows.append((f"{i % 2}.0", f"A{i}", f"B{i}", t1, t2))
    return write_aan(
        folder,
        {"train": rows, "val": rows[: max(1, pairs // 10)], "test": rows[: max(1, pairs // 10)]},
    )


# --- CIFAR-10 ------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes strings as Python 2's cPickle did (BINSTRING), as in the released batches."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    """Protocol 2 with Python 2 strings and
    ``numpy.core.multiarray``: the released batches' opcodes."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(data: np.ndarray, labels: Sequence[int], name: str) -> bytes:
    """One batch dict as released: ``batch_label``, ``labels``
    (list), ``data`` (uint8 [N, 3072]), ``filenames``."""
    return py2_pickle(
        {
            "batch_label": name,
            "labels": [int(v) for v in labels],
            "data": np.ascontiguousarray(data, dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
        }
    )


def to_planes(rgb: np.ndarray) -> np.ndarray:
    """``[N, 32, 32, 3]`` -> the release's ``[N, 3072]`` (R, G, B planes, each row-major)."""
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 1)).reshape(len(rgb), 3072)


def cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random RGB images ``[n, 32, 32, 3]`` with black and white pixels everywhere, and labels."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    rgb[:, :4] = 0  # black rows: real tokens, never padding
    rgb[:, -2:] = 255
    return rgb, rng.integers(0, 10, size=n)


def write_cifar_batches(
    folder: Path, per_batch: int, n_test: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A ``cifar-10-batches-py`` folder; returns the RGB images and labels of train and test."""
    folder.mkdir(parents=True, exist_ok=True)
    train_rgb, train_y = cifar_images(5 * per_batch, seed)
    test_rgb, test_y = cifar_images(n_test, seed + 1)
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        name = f"data_batch_{i + 1}"
        (folder / name).write_bytes(
            cifar_batch(to_planes(train_rgb[part]), train_y[part], f"training batch {i + 1} of 5")
        )
    (folder / "test_batch").write_bytes(
        cifar_batch(to_planes(test_rgb), test_y, "testing batch 1 of 1")
    )
    (folder / "batches.meta").write_bytes(
        py2_pickle({"label_names": ["airplane", "automobile"], "num_vis": 3072})
    )
    return {"train": (train_rgb, train_y), "test": (test_rgb, test_y)}


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_cifar_parquet(folder: Path, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """The Hub's layout: ``plain_text/{train,test}-00000-of-00001.parquet``,
    ``img`` = {bytes, path}."""
    (folder / "plain_text").mkdir(parents=True, exist_ok=True)
    for split, (rgb, labels) in images.items():
        img = pa.array(
            [{"bytes": png_bytes(x), "path": None} for x in rgb],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
        table = pa.table({"img": img, "label": pa.array(labels, pa.int64())})
        pq.write_table(table, folder / "plain_text" / f"{split}-00000-of-00001.parquet")
    return folder


class _Exploit:
    """A pickle payload that would run a shell command when loaded by an unrestricted unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def malicious_batch(command: str, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    data = np.zeros((2, 3072), dtype=np.uint8)
    return pickle.dumps(
        {b"data": data, b"labels": [0, 1], b"x": _Exploit(command)}, protocol=protocol
    )
