"""Text (IMDB): byte tokens from an aclImdb tree, Hub
Parquet shards and the Hub; splits, cache, errors."""

from __future__ import annotations

import datasets
import pytest
from omegaconf import open_dict

import lra_bench.data
from fixtures_data import (
    byte_ids,
    compose,
    imdb_rows,
    smoke_overrides,
    smoke_run,
    write_aclimdb,
    write_imdb_parquet,
)
from lra_bench.data import DataError, data_settings, load_splits, sources, text


@pytest.fixture
def tree(tmp_path):
    return write_aclimdb(tmp_path / "aclImdb")


def rows_of(ds: datasets.Dataset) -> list[tuple[list[int], int]]:
    return list(zip(ds["input_ids"], ds["label"], strict=True))


def expected(split: str) -> list[tuple[list[int], int]]:
    return [(byte_ids(t), y) for t, y in imdb_rows()[split]]


def test_tree_gives_utf8_bytes_plus_one_and_lra_splits(tree, tmp_path):
    splits = text.prepare(data_settings(compose("text", tree, tmp_path / "cache")))
    assert rows_of(splits["train"]) == expected("train")  # unsup/ and imdb.vocab ignored
    assert rows_of(splits["test"]) == expected("test")
    assert rows_of(splits["val"]) == rows_of(splits["test"])  # LRA: dev = test
    assert "Naïve".encode()[2] + 1 in splits["train"][1]["input_ids"]  # a byte of a multi-byte char
    assert max(max(ids) for ids in splits["train"]["input_ids"]) <= 256
    assert min(min(ids) for ids in splits["train"]["input_ids"]) >= 1


def test_parent_folder_and_data_dir_are_searched(tree, tmp_path):
    by_root = text.prepare(
        data_settings(compose("text", tmp_path, tmp_path / "c1"))
    )  # root holding aclImdb/
    by_dir = text.prepare(
        data_settings(
            compose(
                "text", None, tmp_path / "c2", f"paths.data_dir={tmp_path}", "data.source=local"
            )
        )
    )
    assert rows_of(by_root["train"]) == rows_of(by_dir["train"]) == expected("train")


def test_hub_parquet_shards_match_the_tree(tmp_path):
    folder = write_imdb_parquet(tmp_path / "imdb")
    splits = text.prepare(
        data_settings(
            compose(
                "text", None, tmp_path / "cache", f"paths.data_dir={tmp_path}", "data.source=local"
            )
        )
    )
    assert rows_of(splits["train"]) == expected("train")  # the unsupervised shard is ignored
    assert rows_of(splits["test"]) == expected("test")
    assert folder.is_dir()


def test_truncates_to_max_bytes(tmp_path):
    review = "é" * 2500  # 5000 bytes
    reviews = {
        "train": [("pos", "0_9.txt", review), ("neg", "1_2.txt", "bad")],
        "test": [("neg", "0_1.txt", "short"), ("pos", "1_8.txt", "ok")],
    }
    write_aclimdb(tmp_path / "aclImdb", reviews)
    cfg = compose("text", tmp_path / "aclImdb", tmp_path / "cache")
    assert (
        text.prepare(data_settings(cfg))["train"][1]["input_ids"] == byte_ids(review)[:4000]
    )  # negatives first
    with open_dict(cfg.data):
        cfg.data.max_bytes = 7
    assert text.prepare(data_settings(cfg))["train"][1]["input_ids"] == byte_ids(review)[:7]


def test_heldout_dev_split_is_seeded_and_disjoint(tree, tmp_path):
    cfg = compose(
        "text", tree, tmp_path / "cache", "data.dev_split=heldout", "data.heldout_fraction=0.34"
    )
    splits = text.prepare(data_settings(cfg))
    assert (len(splits["train"]), len(splits["val"])) == (4, 2)
    assert sorted(rows_of(splits["train"]) + rows_of(splits["val"])) == sorted(expected("train"))
    assert rows_of(splits["test"]) == expected("test")
    again = text.prepare(
        data_settings(
            compose(
                "text",
                tree,
                tmp_path / "other",
                "data.dev_split=heldout",
                "data.heldout_fraction=0.34",
            )
        )
    )
    assert rows_of(again["val"]) == rows_of(splits["val"])


def test_second_prepare_reuses_the_cache_and_a_changed_file_rebuilds(tree, tmp_path, monkeypatch):
    cfg = compose("text", tree, tmp_path / "cache")
    first = text.prepare(data_settings(cfg))

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(text, "build", no_build)
    assert rows_of(text.prepare(data_settings(cfg))["train"]) == rows_of(first["train"])
    (tree / "train" / "pos" / "0_9.txt").write_text(
        "Changed review, longer than it was before.", encoding="utf-8"
    )
    with pytest.raises(AssertionError, match="rebuilt"):
        text.prepare(data_settings(cfg))


def test_missing_source_is_one_line_naming_where_it_looked(tmp_path):
    with pytest.raises(DataError) as err:
        text.prepare(
            data_settings(
                compose(
                    "text",
                    None,
                    tmp_path / "cache",
                    f"paths.data_dir={tmp_path / 'nodata'}",
                    "data.source=local",
                )
            )
        )
    msg = str(err.value)
    assert "\n" not in msg and "IMDB not found" in msg
    assert str(tmp_path / "nodata" / "aclImdb") in msg and str(tmp_path / "nodata" / "imdb") in msg
    assert "data.root" in msg and "LRA_BENCH_DATA_DIR" in msg and "aclImdb_v1.tar.gz" in msg


def test_incomplete_tree_names_the_missing_folder(tree, tmp_path):
    for f in (tree / "test" / "neg").iterdir():
        f.unlink()
    (tree / "test" / "neg").rmdir()
    with pytest.raises(DataError, match=r"incomplete aclImdb tree.*test/neg"):
        text.prepare(data_settings(compose("text", tree, tmp_path / "cache")))


def test_unreachable_hub_fails_fast_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError) as err:
        text.prepare(
            data_settings(compose("text", None, tmp_path / "cache", f"paths.data_dir={tmp_path}"))
        )  # auto, nothing local
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "unreachable" in msg
        and "no local copy either" in msg
        and str(tmp_path / "aclImdb") in msg
    )


def test_hub_errors_become_one_line(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'stanfordnlp/imdb' on the Hub\nTraceback (most recent call last): ..."
        )

    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError) as err:
        text.prepare(data_settings(compose("text", None, tmp_path / "cache", "data.source=hub")))
    assert (
        "\n" not in str(err.value)
        and "Couldn't reach" in str(err.value)
        and err.value.__cause__ is None
    )


def test_hub_dataset_is_read_like_the_files(tmp_path, monkeypatch):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    hub = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": [t for t, _ in r], "label": [y for _, y in r]}, features=features
            )
            for split, r in {**imdb_rows(), "unsupervised": [("x", 0)]}.items()
        }
    )
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, *a, **k: hub if name == "stanfordnlp/imdb" else None
    )
    splits = text.prepare(
        data_settings(compose("text", None, tmp_path / "cache", "data.source=hub"))
    )
    assert rows_of(splits["train"]) == expected("train") and rows_of(splits["val"]) == expected(
        "test"
    )


def test_bad_label_in_shard_names_file_and_row(tmp_path):
    rows = imdb_rows()
    rows["test"][1] = ("fine", 3)
    write_imdb_parquet(tmp_path / "imdb", rows)
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet row 2: label 3"):
        text.prepare(data_settings(compose("text", tmp_path / "imdb", tmp_path / "cache")))


def test_bad_setting_is_refused(tree, tmp_path):
    from lra_bench.config import ConfigError, validate

    with pytest.raises(ConfigError, match="data.source"):
        validate(compose("text", tree, tmp_path / "cache", "data.source=generate"))


def test_smoke_training_run(tree, tmp_path, monkeypatch):
    monkeypatch.setitem(lra_bench.data.TASK_MODULES, "text", "lra_bench.data.text")
    cfg = compose("text", tree, tmp_path / "cache", *smoke_overrides(tmp_path))
    assert len(load_splits(cfg)["train"]) == 6
    result = smoke_run(cfg)
    assert (
        result["status"] == "complete"
        and result["task"] == "text"
        and 0.0 <= result["test_acc"] <= 1.0
    )
