"""The Pathfinder reader on hand-written files in the LRA release layout, and prepare()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra_bench.compose import compose_config
from lra_bench.config import IMAGE_SIDES
from lra_bench.data import DataError, data_settings
from lra_bench.data import pathfinder as pf

META = "{batch} sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1\n"


def write_release(
    root: Path, n: int = 101, empty: tuple[int, ...] = (7,), side: int = 32, per_batch: int = 60
) -> dict[bytes, int]:
    """A release folder ``root/pathfinder32/curv_contour_length_14``
    of ``n`` images; returns pixels -> label."""
    folder = root / f"pathfinder{side}" / "curv_contour_length_14"
    rng = np.random.default_rng(0)
    expected: dict[bytes, int] = {}
    lines: dict[int, list[str]] = {}
    for index in range(n):
        batch, i = divmod(index, per_batch)
        label = index % 2
        pixels = (
            np.zeros((side, side), np.uint8)
            if index in empty
            else rng.integers(0, 256, (side, side), dtype=np.uint8)
        )
        path = folder / "imgs" / str(batch) / f"sample_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path)
        lines.setdefault(batch, []).append(META.format(batch=f"imgs/{batch}", i=i, label=label))
        if index not in empty:
            expected[pixels.tobytes()] = label
    (folder / "metadata").mkdir(parents=True)
    for batch, rows in lines.items():
        (folder / "metadata" / f"{batch}.npy").write_text("".join(rows))
    return expected


def config(tmp_path: Path, *overrides: str, task: str = "pathfinder"):
    return compose_config(
        [
            f"task={task}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "trainer.progress=false",
            *overrides,
        ]
    )


def rows_of(split) -> list[tuple[bytes, int]]:
    return [(bytes(row["input_ids"]), row["label"]) for row in split]


def test_release_is_read_split_and_cached(tmp_path: Path) -> None:
    expected = write_release(tmp_path / "release")
    cfg = config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}")
    splits = pf.prepare(data_settings(cfg))
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 80,
        "val": 10,
        "test": 10,
    }  # 101 - 1 empty
    seen = [r for name in ("train", "val", "test") for r in rows_of(splits[name])]
    assert all(len(ids) == 1024 for ids, _ in seen)
    assert sorted(seen) == sorted(expected.items())  # every usable image once, with its label
    assert splits["train"][0]["input_ids"] == list(splits["train"][0]["input_ids"])
    again = pf.prepare(data_settings(cfg))  # from the Arrow cache
    assert rows_of(again["val"]) == rows_of(splits["val"])


def test_root_may_name_the_difficulty_folder_and_sizes_may_be_set(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=30, empty=())
    folder = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14"
    cfg = config(
        tmp_path, f"data.root={folder}", "data.train_size=20", "data.val_size=4", "data.test_size=3"
    )
    splits = pf.prepare(data_settings(cfg))  # source=auto finds the release
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "val": 4, "test": 3}
    with pytest.raises(DataError, match="holds contour length 14 but data.difficulty=easy"):
        pf.prepare(data_settings(config(tmp_path, f"data.root={folder}", "data.difficulty=easy")))
    with pytest.raises(DataError, match="holds 30 usable images"):
        pf.prepare(
            data_settings(
                config(
                    tmp_path,
                    f"data.root={folder}",
                    "data.train_size=30",
                    "data.val_size=4",
                    "data.test_size=3",
                )
            )
        )


def test_split_is_seeded(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=50, empty=())
    folder = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14"
    cfg = config(tmp_path, f"data.root={folder}")
    first = pf.build_splits(folder, 32, data_settings(cfg).data)
    second = pf.build_splits(folder, 32, data_settings(cfg).data)
    assert rows_of(first["test"]) == rows_of(second["test"])
    assert [r[1] for r in rows_of(first["train"])] != [
        i % 2 for i in range(40)
    ]  # shuffled, not file order


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_malformed_metadata_line(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=10, empty=())
    meta = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14" / "metadata" / "0.npy"
    lines = meta.read_text().splitlines(keepends=True)
    lines[2] = "imgs/0 sample_2.png 2 yes 1.0 14\n"
    meta.write_text("".join(lines))
    cfg = config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}")
    with pytest.raises(DataError) as excinfo:
        pf.prepare(data_settings(cfg))
    message = one_line_error(excinfo)
    assert f"{meta}:3:" in message and "expected 11 space-separated fields" in message


def test_unreadable_pngs_are_skipped_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = write_release(tmp_path / "release", n=24, empty=())
    imgs = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14" / "imgs" / "0"
    bad = {
        "sample_4.png": b"",
        "sample_9.png": (imgs / "sample_9.png").read_bytes()[:60],
        "sample_11.png": b"not a png",
    }
    for name, raw in bad.items():
        expected.pop(np.asarray(Image.open(imgs / name).convert("L")).tobytes())
        (imgs / name).write_bytes(raw)
    splits = pf.prepare(
        data_settings(config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}"))
    )
    assert sorted(r for s in splits.values() for r in rows_of(s)) == sorted(
        expected.items()
    )  # the 21 others, once each
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: skipped 3 of 24 images in ") and "unreadable" in warning
    assert "imgs/0/sample_4.png, imgs/0/sample_9.png, imgs/0/sample_11.png" in warning
    assert (imgs / "sample_9.png").read_bytes() == bad["sample_9.png"]  # nothing is modified


def test_too_few_readable_pngs_is_one_line(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=12, empty=())
    imgs = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14" / "imgs" / "0"
    for i in range(3):
        (imgs / f"sample_{i}.png").write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        pf.prepare(
            data_settings(
                config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}")
            )
        )
    assert "holds 9 usable images, too few" in one_line_error(excinfo)
    cfg = config(
        tmp_path,
        "data.source=release",
        f"data.root={tmp_path / 'release'}",
        "data.train_size=6",
        "data.val_size=2",
        "data.test_size=2",
    )
    with pytest.raises(DataError) as excinfo:
        pf.prepare(data_settings(cfg))
    assert "= 10 but" in one_line_error(excinfo) and "holds 9 usable images" in one_line_error(
        excinfo
    )


def test_missing_image_and_wrong_size(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=10, empty=())
    folder = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14"
    (folder / "imgs" / "0" / "sample_3.png").unlink()
    with pytest.raises(DataError, match="sample_3.png: image listed in the metadata is missing"):
        pf.read_folder(folder, 32)
    Image.new("L", (16, 16), 9).save(folder / "imgs" / "0" / "sample_3.png")
    with pytest.raises(DataError, match="image is 16x16, expected 32x32"):
        pf.read_folder(folder, 32)


def test_missing_release_says_what_to_do(tmp_path: Path) -> None:
    cfg = config(tmp_path, "data.source=release")
    with pytest.raises(DataError) as excinfo:
        pf.prepare(data_settings(cfg))
    message = one_line_error(excinfo)
    assert (
        str(tmp_path / "data" / "lra_release" / "pathfinder32" / "curv_contour_length_14")
        in message
    )
    assert "data.root" in message and "data.source=generate" in message and "no download" in message


def test_metadata_saved_as_a_numpy_array_is_read(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=12, empty=())
    folder = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14"
    meta = folder / "metadata" / "0.npy"
    table = np.array([line.split() for line in meta.read_text().splitlines()])
    with meta.open("wb") as fh:
        np.save(fh, table)
    assert pf.parse_metadata(meta) == [(f"imgs/0/sample_{i}.png", i % 2) for i in range(12)]


def test_generate_writes_the_release_layout_and_reads_it_back(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "trainer=smoke",
        "data.source=auto",
        "data.train_size=16",
        "data.val_size=4",
        "data.test_size=4",
        "data.gen_workers=1",
    )
    splits = pf.prepare(data_settings(cfg))
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "val": 4, "test": 4}
    assert all(len(row["input_ids"]) == 1024 and row["label"] in (0, 1) for row in splits["train"])
    folders = list(
        (tmp_path / "cache").glob("pathfinder32-images-*/pathfinder32/curv_contour_length_14")
    )
    assert len(folders) == 1
    assert len(list((folders[0] / "imgs" / "0").glob("sample_*.png"))) == 24
    assert len((folders[0] / "metadata" / "0.npy").read_text().splitlines()) == 24
    assert rows_of(pf.prepare(data_settings(cfg))["test"]) == rows_of(splits["test"])


@pytest.mark.slow
def test_pathx_is_128_by_128(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "data.source=generate",
        "data.train_size=2",
        "data.val_size=1",
        "data.test_size=1",
        task="pathx",
    )
    assert cfg.task.max_len == 16384 and cfg.task.num_classes == 2 and cfg.task.vocab_size == 256
    assert IMAGE_SIDES[cfg.task.name] == 128
    splits = pf.prepare(data_settings(cfg))
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert len(splits["val"][0]["input_ids"]) == 16384


@pytest.mark.slow
def test_bad_settings(tmp_path: Path) -> None:
    from lra_bench.config import ConfigError, validate

    with pytest.raises(ConfigError, match="data.difficulty"):
        validate(config(tmp_path, "data.difficulty=extreme"))
    with pytest.raises(ConfigError, match="data.source"):
        validate(config(tmp_path, "data.source=hub"))
    with pytest.raises(ConfigError, match="data.val_size"):
        validate(config(tmp_path, "data.train_size=10", "data.test_size=2"))


def test_smoke_preset_takes_what_a_small_release_holds(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=29, empty=())
    splits = pf.prepare(
        data_settings(
            config(
                tmp_path,
                "trainer=smoke",
                "data.source=release",
                f"data.root={tmp_path / 'release'}",
            )
        )
    )
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {
        "train": 21,
        "val": 4,
        "test": 4,
    }  # 64/16/16 asked, shrunk in proportion to the 29 there
    write_release(tmp_path / "tiny", n=5, empty=())
    with pytest.raises(DataError) as excinfo:
        pf.prepare(
            data_settings(
                config(
                    tmp_path,
                    "trainer=smoke",
                    "data.source=release",
                    f"data.root={tmp_path / 'tiny'}",
                )
            )
        )
    assert (
        "holds 5 usable images, too few for train/val/test (at least 6 needed)"
        in one_line_error(excinfo)
    )


# --- the release folder is the boundary; its content is the cache key -----------------------------

FOLDER = Path("pathfinder32") / "curv_contour_length_14"


def release_with_line(tmp_path: Path, line_2: str) -> Path:
    """A 10-image release whose metadata line 2 is replaced; returns the metadata file."""
    write_release(tmp_path / "release", n=10, empty=())
    meta = tmp_path / "release" / FOLDER / "metadata" / "0.npy"
    lines = meta.read_text().splitlines(keepends=True)
    lines[1] = line_2
    meta.write_text("".join(lines))
    return meta


def outside_image(tmp_path: Path) -> Path:
    """An image of the right size outside the release, which must never be read."""
    secret = tmp_path / "secret" / "secret.png"
    secret.parent.mkdir()
    Image.new("L", (32, 32), 200).save(secret)
    return secret


@pytest.mark.parametrize("kind", ["climbing", "absolute"])
def test_metadata_paths_leaving_the_release_are_refused(tmp_path: Path, kind: str) -> None:
    secret = outside_image(tmp_path)
    batch = "imgs/../../../../secret" if kind == "climbing" else str(secret.parent)
    meta = release_with_line(tmp_path, f"{batch} secret.png 1 1 1.0 14 4 2 0.5 1 1\n")
    assert (tmp_path / "release" / FOLDER / batch / "secret.png").resolve() == secret.resolve()
    cfg = config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}")
    with pytest.raises(DataError) as excinfo:
        pf.prepare(data_settings(cfg))
    message = one_line_error(excinfo)
    assert message.startswith(f"{meta}:2: image path '{batch}/secret.png' leaves the release")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.arrow"))


@pytest.mark.parametrize("linked", ["image", "folder"])
def test_symlinks_out_of_the_release_are_refused(tmp_path: Path, linked: str) -> None:
    secret = outside_image(tmp_path)
    write_release(tmp_path / "release", n=10, empty=())
    folder = tmp_path / "release" / FOLDER
    if linked == "image":
        target = folder / "imgs" / "0" / "sample_4.png"
        target.unlink()
        target.symlink_to(secret)
    else:
        target = folder / "imgs" / "0"
        (folder / "imgs" / "0").rename(tmp_path / "secret" / "0")
        target.symlink_to(tmp_path / "secret" / "0", target_is_directory=True)
    with pytest.raises(DataError) as excinfo:
        pf.read_folder(folder, 32)
    message = one_line_error(excinfo)
    line = 5 if linked == "image" else 1
    assert message.startswith(f"{folder / 'metadata' / '0.npy'}:{line}: {folder / 'imgs' / '0'}")
    assert f"outside the release folder {folder.resolve()}" in message


def test_symlinks_inside_the_release_are_read(tmp_path: Path) -> None:
    expected = write_release(tmp_path / "release", n=10, empty=())
    folder = tmp_path / "release" / FOLDER
    (folder / "imgs" / "0").rename(folder / "imgs" / "real")
    (folder / "imgs" / "0").symlink_to("real", target_is_directory=True)
    pixels, labels, _ = pf.read_folder(folder, 32)
    assert sorted(zip((p.tobytes() for p in pixels), labels, strict=True)) == sorted(
        expected.items()
    )


def test_a_flipped_label_or_a_replaced_image_is_a_new_cache_entry(tmp_path: Path) -> None:
    write_release(tmp_path / "release", n=20, empty=())
    folder = tmp_path / "release" / FOLDER
    cfg = config(tmp_path, "data.source=release", f"data.root={tmp_path / 'release'}")

    def labels_and_pixels() -> tuple[list, set]:
        splits = pf.prepare(data_settings(cfg))
        rows = [r for name in ("train", "val", "test") for r in rows_of(splits[name])]
        return sorted(label for _, label in rows), {ids for ids, _ in rows}

    labels, pixels = labels_and_pixels()
    meta = folder / "metadata" / "0.npy"
    text = meta.read_text()
    assert text.startswith("imgs/0 sample_0.png 0 0 1.0 ")
    meta.write_text(text.replace(" 0 0 1.0 ", " 0 1 1.0 ", 1))  # line 1: label 0 -> 1, same size
    flipped, _ = labels_and_pixels()
    assert flipped.count(1) == labels.count(1) + 1
    Image.new("L", (32, 32), 77).save(folder / "imgs" / "0" / "sample_5.png")
    _, replaced = labels_and_pixels()
    assert bytes([77] * 1024) in replaced and bytes([77] * 1024) not in pixels
    assert len(list((tmp_path / "cache").glob("pathfinder-*"))) == 3
