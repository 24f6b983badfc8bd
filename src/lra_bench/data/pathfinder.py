"""Pathfinder (32x32) and Path-X (128x128): the LRA release reader and the generated source.

``data.source``: ``release`` reads ``<root>/pathfinder<N>/<difficulty folder>/`` (root =
``data.root``, else ``<paths.data_dir>/lra_release``; ``data.root`` may also point at the
difficulty folder itself); ``generate`` draws the images with the package's generator into
``paths.cache_dir`` in the same layout and reads them back through the same reader;
``auto`` uses the release when it is found and generates otherwise. ``generate`` makes
``data.size`` images, else train+val+test sizes when set, else 200,000 (the release's
count per difficulty: 160k/20k/20k after the split); ``data.gen_seed`` seeds them and
``data.gen_workers`` processes draw (and later read) them.

Each metadata line names an image and its label (fields 0-1 and 3). Pixels 0..255 are the
tokens (no padding: every sequence is exactly H*W long), all-zero images are skipped,
and the images are split 80/10/10 by a seeded permutation (or into exactly
``data.train_size`` / ``val_size`` / ``test_size`` when all three are set).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import xxhash
from PIL import Image

from lra_bench.config import DataConfig
from lra_bench.data import DataError, DataSettings
from lra_bench.data.cache import cache_key_hash, cached_splits
from lra_bench.data.generators import pathfinder as gen
from lra_bench.data.sources import release_or_generate
from lra_bench.data.tasks import IMAGE_SIDES
from lra_bench.io import build_dir_once

log = logging.getLogger(__name__)

DEFAULT_GENERATED = 200_000  # images per difficulty in the LRA release (160k / 20k / 20k)
METADATA_FIELDS = 11
READER_VERSION = 1
_EXPECTED_LINE = (
    "11 space-separated fields 'imgs/<batch> sample_<i>.png <i> <label 0|1> <continuity> "
    "<contour_length> <distractor_length> <paddle_length> <paddle_thickness> <margin> "
    "<n_contrasts>'"
)


# ----------------------------------------------------------------------------- settings


MIN_FITTED_SPLIT = 2  # data.fit_sizes: fewest examples kept per split


def difficulty(data: DataConfig) -> str:
    return data.difficulty or "hard"


def _requested_sizes(data: DataConfig) -> tuple[int, int, int] | None:
    """(train, val, test) when set (validation makes it all three or none), else None."""
    if data.train_size is None or data.val_size is None or data.test_size is None:
        return None
    return data.train_size, data.val_size, data.test_size


def split_sizes(n: int, data: DataConfig, where: Path) -> tuple[int, int, int]:
    """(train, val, test) sizes: the requested ones, else 80/10/10 of ``n``."""
    sizes = _requested_sizes(data)
    if sizes is None:
        val = test = n // 10
        if val == 0:
            raise DataError(
                f"{where} holds {n} usable images, too few for an 80/10/10 split (at least 10 "
                "needed); add images or set data.*_size"
            )
        return n - val - test, val, test
    if sum(sizes) > n and data.fit_sizes:
        return _fitted_sizes(sizes, n, where)
    if sum(sizes) > n:
        raise DataError(
            f"data.train_size+val_size+test_size = {sum(sizes)} but {where} holds {n} usable "
            "images; "
            "lower the sizes or unset them for an 80/10/10 split"
        )
    return sizes


def _fitted_sizes(sizes: tuple[int, int, int], n: int, where: Path) -> tuple[int, int, int]:
    """The requested sizes shrunk in proportion to the
    ``n`` images there, at least a few per split."""
    if n < 3 * MIN_FITTED_SPLIT:
        raise DataError(
            f"{where} holds {n} usable images, too few for train/val/test (at least "
            f"{3 * MIN_FITTED_SPLIT} needed)"
        )
    val, test = (max(MIN_FITTED_SPLIT, s * n // sum(sizes)) for s in sizes[1:])
    return min(sizes[0], n - val - test), val, test


# ----------------------------------------------------------------------------- reader


def _natural(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def metadata_files(folder: Path) -> list[Path]:
    return sorted((folder / "metadata").glob("*.npy"), key=_natural)


def _metadata_lines(path: Path) -> list[str]:
    """The lines of a metadata file: text as released, or a NumPy array of strings as the
    original generator's np.save writes it."""
    try:
        raw = path.read_bytes()
        if raw.startswith(b"\x93NUMPY"):
            with path.open("rb") as fh:
                table = np.load(fh, allow_pickle=False)
            return [" ".join(str(v) for v in np.atleast_1d(row)) for row in np.atleast_2d(table)]
        return raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(
            f"{path}: unreadable metadata file ({_one_line(err)}); expected a text file of "
            f"{_EXPECTED_LINE}"
        ) from None


def parse_metadata(path: Path) -> list[tuple[str, int]]:
    """(image path relative to the difficulty folder, label) for each line of a metadata file."""
    return [(rel, label) for _, rel, label in _metadata_rows(path)]


def _metadata_rows(path: Path) -> list[tuple[int, str, int]]:
    """(line number, image path relative to the difficulty folder, label) per metadata line.

    Paths that are absolute or climb with ``..`` are refused: the release folder holds every
    image it lists.
    """
    rows = []
    for lineno, line in enumerate(_metadata_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if (
            len(fields) != METADATA_FIELDS
            or fields[3] not in ("0", "1")
            or not fields[1].endswith(".png")
        ):
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise DataError(
                f"{path}:{lineno}: malformed metadata line {shown!r}; expected {_EXPECTED_LINE}"
            )
        rel = f"{fields[0]}/{fields[1]}"
        if rel.startswith(("/", "\\")) or ".." in rel.replace("\\", "/").split("/"):
            raise DataError(
                f"{path}:{lineno}: image path {rel!r} leaves the release folder; metadata lines "
                "name images inside it, as 'imgs/<batch> sample_<i>.png'"
            )
        rows.append((lineno, rel, int(fields[3])))
    return rows


def listed_images(folder: Path) -> tuple[list[Path], np.ndarray]:
    """Paths and labels of every image the metadata lists, each checked to exist in ``folder``."""
    rels, labels, _ = release_listing(folder)
    return [folder / rel for rel in rels], labels


def release_listing(folder: Path) -> tuple[list[str], np.ndarray, str]:
    """Image paths (relative to ``folder``) and labels as the metadata lists them, and a digest
    of every image's size and modification time: one stat per image.

    Each image must exist, and neither it nor its folder may link outside ``folder``; else
    one line naming the metadata file and line.
    """
    files = metadata_files(folder)
    if not files:
        raise DataError(
            f"{folder / 'metadata'}: no metadata/*.npy files; expected the LRA Pathfinder layout "
            "(imgs/, metadata/)"
        )
    rows = [(f, lineno, rel, label) for f in files for lineno, rel, label in _metadata_rows(f)]
    if not rows:
        raise DataError(f"{folder / 'metadata'}: the metadata files list no images")
    inside, parents, digest = folder.resolve(), {}, xxhash.xxh3_128()
    for meta, lineno, rel, _ in rows:
        st = _stat_inside(f"{folder}/{rel}", inside, parents, f"{meta}:{lineno}")
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    labels = np.array([label for *_, label in rows], dtype=np.int64)
    return [rel for _, _, rel, _ in rows], labels, digest.hexdigest()


def _stat_inside(path: str, inside: Path, parents: dict[str, bool], where: str) -> os.stat_result:
    """The image's stat; DataError if it is missing or it or its folder links outside ``inside``.

    ``parents`` remembers each folder's verdict, so a folder is resolved once, not per image.
    """
    parent = path.rpartition("/")[0]
    if parent not in parents:
        parents[parent] = Path(parent).resolve().is_relative_to(inside)
    try:
        st = os.lstat(path)
        linked = stat.S_ISLNK(st.st_mode)
        st = os.stat(path) if linked else st
    except FileNotFoundError:
        raise DataError(f"{where}: {path}: image listed in the metadata is missing") from None
    except OSError as err:
        raise DataError(f"{where}: {path}: cannot be read ({_one_line(err)})") from None
    if not parents[parent] or (linked and not Path(path).resolve().is_relative_to(inside)):
        raise DataError(
            f"{where}: {path} resolves to {Path(path).resolve()}, outside the release folder "
            f"{inside}; copy the image into the folder instead of linking to it"
        )
    return st


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_image(path: Path, side: int) -> np.ndarray:
    """The image as (side * side,) uint8 grey levels; DataError (one line) when unusable."""
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: image listed in the metadata is missing") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: unreadable or truncated PNG ({_one_line(err)})") from None
    if pixels.shape != (side, side):
        raise DataError(
            f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, expected {side}x{side}"
        )
    return pixels.reshape(-1)


class UnreadableImage(DataError):
    """A listed image that exists but cannot be decoded (0 bytes, truncated, not a PNG)."""


def _load_chunk(job: tuple[list[Path], int]) -> tuple[np.ndarray, list[int]]:
    """The chunk's pixels and the positions of unreadable images (left all-zero)."""
    paths, side = job
    out = np.zeros((len(paths), side * side), dtype=np.uint8)
    unreadable = []
    for i, path in enumerate(paths):
        try:
            out[i] = load_image(path, side)
        except UnreadableImage:
            unreadable.append(i)
    return out, unreadable


def _warn_unreadable(folder: Path, paths: list[Path], total: int) -> None:
    """One warning line counting the unreadable images and naming the first few."""
    shown = ", ".join(str(p.relative_to(folder)) for p in paths[:3]) + (
        ", ..." if len(paths) > 3 else ""
    )
    print(
        f"warning: skipped {len(paths)} of {total} images in {folder} as unreadable (0 bytes or "
        f"not a decodable PNG): {shown}",
        file=sys.stderr,
        flush=True,
    )


def read_folder(
    folder: Path, side: int, workers: int = 1, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """All images of a difficulty folder, in metadata order, without the all-zero ones.

    Returns (pixels (N, side*side) uint8, labels (N,) int64, number of skipped images).
    """
    from tqdm.auto import tqdm

    paths, labels = listed_images(folder)
    pixels = np.empty((len(paths), side * side), dtype=np.uint8)
    chunk = 512
    jobs = [(paths[a : a + chunk], side) for a in range(0, len(paths), chunk)]
    unreadable: list[int] = []
    bar = tqdm(total=len(paths), desc=f"read {folder.name}", unit="img", disable=not progress)
    with bar, _chunk_map(workers, len(jobs)) as mapper:
        for k, (part, bad) in enumerate(mapper(_load_chunk, jobs)):
            pixels[k * chunk : k * chunk + len(part)] = part
            unreadable += [k * chunk + i for i in bad]
            bar.update(len(part))
    if unreadable:
        _warn_unreadable(folder, [paths[i] for i in unreadable], len(paths))
    keep = pixels.any(axis=1)  # unreadable images were left all-zero
    skipped = int((~keep).sum())
    if skipped > len(unreadable):
        log.info("pathfinder: skipped %d empty image(s) in %s", skipped - len(unreadable), folder)
    return pixels[keep], labels[keep], skipped


@contextmanager
def _chunk_map(workers: int, n_jobs: int) -> Iterator[Callable]:
    """An ordered ``map`` over chunks: a process pool when it pays, else the built-in one."""
    if workers > 1 and n_jobs > 1 and not mp.current_process().daemon:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(workers, n_jobs)) as pool:
            yield pool.imap
    else:
        yield map


def to_dataset(pixels: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    """Rows of ``input_ids`` (fixed-length lists of uint8 pixel tokens) and ``label``."""
    n, length = pixels.shape
    ids = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(pixels).reshape(-1)), length
    )
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "label": pa.array(labels, type=pa.int64())}
    )


def build_splits(
    folder: Path, side: int, data: DataConfig, workers: int = 1, progress: bool = False
) -> dict[str, datasets.Dataset]:
    """Read a difficulty folder and split it by the seeded permutation (``data.split_seed``: the
    same split for every training seed)."""
    pixels, labels, _ = read_folder(folder, side, workers=workers, progress=progress)
    n_train, n_val, n_test = split_sizes(len(labels), data, folder)
    order = np.random.default_rng(data.split_seed).permutation(len(labels))
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n_train + n_val + n_test),
    }
    return {
        name: to_dataset(pixels[order[a:b]], labels[order[a:b]]) for name, (a, b) in bounds.items()
    }


# ----------------------------------------------------------------------------- sources


def _release_root(settings: DataSettings) -> Path:
    root = settings.data.root or str(settings.data_dir / "lra_release")
    return Path(root).expanduser()


def find_release(settings: DataSettings, side: int, level: str) -> Path | None:
    """The release's difficulty folder (holding metadata/), or None when it is not there."""
    root, sub = _release_root(settings), gen.DIFFICULTY_FOLDER[level]
    for folder in (
        root,
        root / sub,
        root / f"pathfinder{side}" / sub,
        root / "lra_release" / f"pathfinder{side}" / sub,
    ):
        if (folder / "metadata").is_dir():
            if folder == root and folder.name != sub:
                _check_contour_length(folder, level)
            return folder
    return None


def _check_contour_length(folder: Path, level: str) -> None:
    """When data.root names a difficulty folder directly, it must match data.difficulty."""
    files = metadata_files(folder)
    fields = (
        next((line.split() for line in _metadata_lines(files[0]) if line.strip()), [])
        if files
        else []
    )
    want = gen.DIFFICULTY_LENGTH[level]
    if len(fields) == METADATA_FIELDS and fields[5] != str(want):
        raise DataError(
            f"{folder}: holds contour length {fields[5]} but data.difficulty={level} needs {want}; "
            "point data.root at the matching folder or change data.difficulty"
        )


def _missing_release(settings: DataSettings, side: int, level: str) -> DataError:
    where = _release_root(settings) / f"pathfinder{side}" / gen.DIFFICULTY_FOLDER[level]
    return DataError(
        f"Pathfinder release not found: no {where}/metadata; get lra_release.gz from "
        "github.com/google-research/long-range-arena and set data.root to the folder holding "
        f"pathfinder{side}/ (or to the {gen.DIFFICULTY_FOLDER[level]} folder itself), "
        "or use data.source=generate, which needs no download"
    )


def _release_key(folder: Path) -> dict:
    """What identifies a release's content: its metadata files' bytes, and the size and
    modification time of every image they list (a flipped label or a replaced image is a
    new cache entry)."""
    _, labels, images = release_listing(folder)  # first: one line for unreadable metadata
    metadata = xxhash.xxh3_128()
    for f in metadata_files(folder):
        metadata.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        metadata.update(f.read_bytes())
    return {
        "folder": str(folder.resolve()),
        "metadata": metadata.hexdigest(),
        "images": {"count": len(labels), "sizes_and_times": images},
    }


def generated_folder(
    cache_dir: Path, params: gen.PathfinderParams, n: int, seed: int, level: str
) -> tuple[Path, dict]:
    """Where ``generate`` writes its images, and the key that names them."""
    key = {
        "params": dataclasses.asdict(params),
        "n": n,
        "seed": seed,
        "version": gen.GENERATOR_VERSION,
        "batch": gen.BATCH_SIZE,
    }
    root = (
        cache_dir
        / f"pathfinder{params.image_size}-images-{cache_key_hash('pathfinder-images', key)}"
    )
    return root / f"pathfinder{params.image_size}" / gen.DIFFICULTY_FOLDER[level], key


def ensure_generated(
    folder: Path, params: gen.PathfinderParams, n: int, seed: int, workers: int, progress: bool
) -> Path:
    """Generate the images unless a complete copy exists
    (built aside, renamed into place, locked)."""

    def fill(tmp: Path) -> None:
        log.info(
            "pathfinder: generating %d images of %dx%d into %s",
            n,
            params.image_size,
            params.image_size,
            folder,
        )
        gen.write_dataset(tmp, params, n, seed, workers=workers, progress=progress)

    return build_dir_once(folder, "metadata", fill)


def _generated_count(data: DataConfig) -> int:
    if data.size is not None:
        return data.size
    sizes = _requested_sizes(data)
    return sum(sizes) if sizes is not None else DEFAULT_GENERATED


def prepare(settings: DataSettings) -> dict[str, datasets.Dataset]:
    """The train/val/test splits of Pathfinder or Path-X
    (cached as Arrow, keyed by their shaping)."""
    data, name = settings.data, settings.task.name
    side, level = IMAGE_SIDES[name], difficulty(data)
    workers, progress = data.gen_workers or 1, settings.progress
    requested = _requested_sizes(data)
    shaping = {
        "image_size": side,
        "difficulty": level,
        "sizes": list(requested) if requested else "80/10/10",
        "split_seed": data.split_seed,
        "reader": READER_VERSION,
        **({"fit_sizes": True} if data.fit_sizes else {}),
    }
    folder = release_or_generate(
        data.source,
        lambda: find_release(settings, side, level),
        lambda: _missing_release(settings, side, level),
    )
    if folder is not None:
        key = {"source": "release", **_release_key(folder), **shaping}
        return cached_splits(
            settings.cache_dir,
            name,
            key,
            lambda: build_splits(folder, side, data, workers, progress),
        )

    params = gen.preset(side, level, data.seed_rule)
    n, seed = _generated_count(data), data.gen_seed
    target, gen_key = generated_folder(settings.cache_dir, params, n, seed, level)
    key = {"source": "generate", "generator": gen_key, **shaping}

    def build() -> dict[str, datasets.Dataset]:
        ensure_generated(target, params, n, seed, workers, progress)
        return build_splits(target, side, data, workers, progress)

    return cached_splits(settings.cache_dir, name, key, build)
