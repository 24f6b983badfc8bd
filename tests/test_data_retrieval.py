"""Retrieval (AAN): the release's headerless TSVs, the
double truncation, errors, and a dual-encoder run."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

import lra_bench.data
from fixtures_data import (
    aan_line,
    aan_rows,
    byte_ids,
    compose,
    smoke_overrides,
    smoke_run,
    write_aan,
)
from lra_bench.data import DataError, data_settings, load_splits, retrieval
from lra_bench.data.batches import Collator
from lra_bench.model import build_model


@pytest.fixture
def release(tmp_path):
    """``<tmp>/lra_release/lra_release/tsv_data``, as the release archive unpacks."""
    write_aan(tmp_path / "lra_release" / "lra_release" / "tsv_data", aan_rows())
    return tmp_path / "lra_release"


def expected(split: str, limit: int = 4000) -> list[tuple[list[int], list[int], int]]:
    return [
        (byte_ids(t1[:10_000])[:limit], byte_ids(t2[:10_000])[:limit], int(float(y)))
        for y, _, _, t1, t2 in aan_rows()[split]
    ]


def rows_of(ds) -> list[tuple[list[int], list[int], int]]:
    return list(zip(ds["input_ids_1"], ds["input_ids_2"], ds["label"], strict=True))


def test_reads_pairs_with_float_labels_and_eval_as_dev(release, tmp_path):
    splits = retrieval.prepare(data_settings(compose("retrieval", release, tmp_path / "cache")))
    for split in ("train", "val", "test"):
        assert rows_of(splits[split]) == expected(split)
    assert splits["train"]["label"][:2] == [1, 0]  # "1.0" and "0.0"
    assert (
        len(splits["train"][0]["input_ids_1"]) == 4000
        and len(splits["train"][1]["input_ids_2"]) == 4000
    )
    assert set(splits["train"].column_names) == {"input_ids_1", "input_ids_2", "label"}


def test_first_10000_bytes_then_max_bytes(release, tmp_path):
    cfg = compose("retrieval", release, tmp_path / "cache")
    with open_dict(cfg.data):
        cfg.data.max_bytes = 12_000
    splits = retrieval.prepare(data_settings(cfg))
    long_doc = aan_rows()["train"][0][3]
    assert len(long_doc) > 12_000
    assert splits["train"][0]["input_ids_1"] == byte_ids(long_doc[:10_000])
    assert rows_of(splits["train"]) == expected("train", 12_000)


@pytest.mark.parametrize("where", ["outer", "inner", "tsv_data", "data_dir"])
def test_root_may_point_at_any_level_of_the_release(release, tmp_path, where):
    roots = {
        "outer": release,
        "inner": release / "lra_release",
        "tsv_data": release / "lra_release" / "tsv_data",
    }
    if where == "data_dir":
        cfg = compose("retrieval", None, tmp_path / "cache", f"paths.data_dir={tmp_path}")
    else:
        cfg = compose("retrieval", roots[where], tmp_path / "cache")
    assert rows_of(retrieval.prepare(data_settings(cfg))["test"]) == expected("test")


def test_malformed_lines_name_file_and_line(tmp_path):
    rows = aan_rows()
    folder = write_aan(tmp_path / "tsv_data", rows)
    lines = [aan_line(*r) for r in rows["val"]]
    (folder / "new_aan_pairs.eval.tsv").write_bytes(lines[0] + b"1.0\tA\tB\tonly one text\n")
    with pytest.raises(DataError) as err:
        retrieval.prepare(data_settings(compose("retrieval", folder, tmp_path / "cache")))
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "new_aan_pairs.eval.tsv:2: expected 5 tab-separated fields" in msg
        and "found 4" in msg
    )
    (folder / "new_aan_pairs.eval.tsv").write_bytes(lines[0] + lines[1] + b"yes\tA\tB\tx\ty\n")
    with pytest.raises(DataError, match=r"new_aan_pairs\.eval\.tsv:3: label 'yes' is not 0 or 1"):
        retrieval.prepare(data_settings(compose("retrieval", folder, tmp_path / "cache")))
    (folder / "new_aan_pairs.eval.tsv").write_bytes(b"\n")
    with pytest.raises(DataError, match=r"no examples in .*new_aan_pairs\.eval\.tsv"):
        retrieval.prepare(data_settings(compose("retrieval", folder, tmp_path / "cache")))


def test_missing_and_incomplete_sources(tmp_path):
    with pytest.raises(DataError) as err:
        retrieval.prepare(
            data_settings(
                compose(
                    "retrieval", None, tmp_path / "cache", f"paths.data_dir={tmp_path / 'none'}"
                )
            )
        )
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "AAN pairs not found" in msg
        and "lra_release.gz" in msg
        and "data.root" in msg
    )
    assert str(tmp_path / "none" / "lra_release" / "lra_release" / "tsv_data") in msg
    folder = write_aan(tmp_path / "tsv_data", aan_rows())
    (folder / "new_aan_pairs.test.tsv").unlink()
    with pytest.raises(
        DataError, match=r"incomplete AAN data .*new_aan_pairs\.test\.tsv is missing"
    ):
        retrieval.prepare(data_settings(compose("retrieval", folder, tmp_path / "cache")))


def test_second_prepare_reuses_the_cache(release, tmp_path, monkeypatch):
    cfg = compose("retrieval", release, tmp_path / "cache")
    first = retrieval.prepare(data_settings(cfg))
    monkeypatch.setattr(retrieval, "build", lambda *a: pytest.fail("rebuilt although cached"))
    assert rows_of(retrieval.prepare(data_settings(cfg))["val"]) == rows_of(first["val"])


def test_smoke_run_and_the_head_sees_both_documents(release, tmp_path, monkeypatch):
    monkeypatch.setitem(lra_bench.data.TASK_MODULES, "retrieval", "lra_bench.data.retrieval")
    cfg = compose("retrieval", release, tmp_path / "cache", *smoke_overrides(tmp_path))
    with open_dict(cfg.data):
        cfg.data.max_bytes = 256  # short documents keep the CPU run to seconds
    result = smoke_run(cfg)
    assert result["status"] == "complete" and result["task"] == "retrieval"

    splits = load_splits(cfg)
    rows = splits["val"][:2]
    collate = Collator(cfg.task.max_len, "batch", False, dual=True)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        base = model(collate(rows))
        changed = {**rows, "input_ids_2": [[5, 6, 7] * 20, rows["input_ids_2"][1]]}
        other = model(collate(changed))
    assert not torch.allclose(base[0], other[0])  # document 2 of pair 0 changed: its logits move
    torch.testing.assert_close(base[1], other[1])  # pair 1 untouched
