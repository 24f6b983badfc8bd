"""Arrow cache of prepared splits: reuse, rebuild of damaged entries, concurrent builders."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
from pathlib import Path

import datasets
import pytest

from lra_bench.data.cache import SPLITS, cache_path, cached_splits

KEY = {"source": "test", "size": 3}


def make_splits() -> dict[str, datasets.Dataset]:
    return {
        split: datasets.Dataset.from_dict(
            {"input_ids": [[1, 2], [3], [4, 5, 6]], "label": [0, 1, i]}
        )
        for i, split in enumerate(SPLITS)
    }


class CountingBuild:
    """A build function that records how often it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, datasets.Dataset]:
        self.calls += 1
        return make_splits()


def never() -> dict[str, datasets.Dataset]:
    raise AssertionError("build called although the entry is cached")


def test_second_call_reuses_the_entry(tmp_path: Path):
    build = CountingBuild()
    first = cached_splits(tmp_path, "demo", KEY, build)
    assert build.calls == 1
    second = cached_splits(tmp_path, "demo", KEY, never)
    for split in SPLITS:
        assert second[split]["input_ids"] == first[split]["input_ids"] == [[1, 2], [3], [4, 5, 6]]
    assert second["test"]["label"] == [0, 1, 2]
    assert second["train"].cache_files, "expected a memory-mapped dataset"
    assert not list(tmp_path.glob(".*tmp*")), "temporary build folder left behind"


def test_key_change_builds_a_new_entry(tmp_path: Path):
    cached_splits(tmp_path, "demo", KEY, make_splits)
    build = CountingBuild()
    cached_splits(tmp_path, "demo", {**KEY, "size": 4}, build)
    assert build.calls == 1
    assert cache_path(tmp_path, "demo", KEY) != cache_path(tmp_path, "demo", {**KEY, "size": 4})


@pytest.mark.parametrize("damage", ["key.json", "val", "train/dataset_info.json"])
def test_damaged_entry_is_rebuilt(tmp_path: Path, damage: str):
    cached_splits(tmp_path, "demo", KEY, make_splits)
    entry = cache_path(tmp_path, "demo", KEY)
    target = entry / damage
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    build = CountingBuild()
    splits = cached_splits(tmp_path, "demo", KEY, build)
    assert build.calls == 1
    assert splits["val"]["label"] == [0, 1, 1]
    assert cached_splits(tmp_path, "demo", KEY, never)["train"]["input_ids"][2] == [4, 5, 6]


def slow_build(counter: str) -> dict[str, datasets.Dataset]:
    with open(counter, "a") as f:
        f.write("built\n")
    time.sleep(1.0)  # long enough for the other process to arrive while this one builds
    return make_splits()


def prepare_in_process(cache_dir: str, counter: str, start, results) -> None:
    start.wait(timeout=120)  # both processes reach the cache at the same moment
    splits = cached_splits(cache_dir, "demo", KEY, lambda: slow_build(counter))
    results.put({split: splits[split]["label"] for split in SPLITS})


@pytest.mark.slow
def test_two_processes_preparing_at_once_both_succeed(tmp_path: Path):
    ctx = mp.get_context("spawn")
    results, start = ctx.Queue(), ctx.Barrier(2)
    counter = tmp_path / "builds.txt"
    args = (str(tmp_path / "cache"), str(counter), start, results)
    procs = [ctx.Process(target=prepare_in_process, args=args) for _ in range(2)]
    for proc in procs:
        proc.start()
    outputs = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert outputs[0] == outputs[1] == {"train": [0, 1, 0], "val": [0, 1, 1], "test": [0, 1, 2]}
    assert counter.read_text().count("built") == 1
    assert cached_splits(tmp_path / "cache", "demo", KEY, never)["test"]["label"] == [0, 1, 2]


def test_changed_values_inside_an_arrow_file_are_noticed_and_rebuilt(tmp_path: Path, capsys):
    marker = 7_777_777  # a value whose 4 bytes (int32 tokens) occur once in the file
    splits = {
        s: datasets.Dataset.from_dict({"input_ids": [[1, marker], [3]], "label": [0, 1]})
        for s in SPLITS
    }
    cached_splits(tmp_path, "demo", KEY, lambda: splits)
    entry = cache_path(tmp_path, "demo", KEY)
    (arrow,) = (entry / "train").glob("data-*.arrow")
    raw = arrow.read_bytes()
    assert raw.count(marker.to_bytes(4, "little")) == 1
    arrow.write_bytes(raw.replace(marker.to_bytes(4, "little"), (marker + 1).to_bytes(4, "little")))
    capsys.readouterr()
    build = CountingBuild()
    rebuilt = cached_splits(tmp_path, "demo", KEY, build)
    assert build.calls == 1 and rebuilt["train"]["input_ids"] == [[1, 2], [3], [4, 5, 6]]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"notice: rebuilding the data cache {entry}: train split"
    )


def test_no_lock_files_are_left_behind(tmp_path: Path):
    cached_splits(tmp_path, "demo", KEY, make_splits)
    cached_splits(tmp_path, "demo", KEY, never)
    assert not list(tmp_path.rglob("*.lock"))


def test_token_ids_outside_the_vocabulary_are_one_line(tmp_path: Path):
    from lra_bench.data import DataError, check_ranges

    cached_splits(tmp_path, "demo", KEY, make_splits)
    train = cached_splits(tmp_path, "demo", KEY, never)["train"]
    check_ranges(train, "demo train split", vocab_size=7, num_classes=2)
    with pytest.raises(DataError) as err:
        check_ranges(train, "demo train split", vocab_size=6, num_classes=2)
    message = str(err.value)
    assert "\n" not in message and "token ids 1..6, outside 0..5" in message
    assert str(cache_path(tmp_path, "demo", KEY)) in message
    with pytest.raises(DataError, match="labels 0..1, outside 0..0"):
        check_ranges(train, "demo train split", vocab_size=7, num_classes=1)


def shift_boundary(arrow: Path, row: int, by: int) -> None:
    """Move where example ``row`` ends by ``by`` tokens, leaving every token value in place."""
    import pyarrow as pa

    with pa.ipc.open_stream(arrow) as reader:
        table = reader.read_all()
    ids = table.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_pylist()
    offsets[row + 1] += by
    moved = pa.ListArray.from_arrays(pa.array(offsets, ids.offsets.type), ids.values)
    table = table.set_column(table.column_names.index("input_ids"), "input_ids", moved)
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)


def test_a_moved_boundary_between_examples_is_noticed_and_rebuilt(tmp_path: Path, capsys):
    cached_splits(tmp_path, "demo", KEY, make_splits)
    entry = cache_path(tmp_path, "demo", KEY)
    (arrow,) = (entry / "train").glob("data-*.arrow")
    shift_boundary(arrow, row=0, by=1)  # [[1, 2], [3], ...] -> [[1, 2, 3], [], ...]
    moved = datasets.load_from_disk(str(entry / "train"))["input_ids"]
    assert moved == [[1, 2, 3], [], [4, 5, 6]]  # same tokens, same count/min/max/sum
    capsys.readouterr()
    build = CountingBuild()
    rebuilt = cached_splits(tmp_path, "demo", KEY, build)
    assert build.calls == 1 and rebuilt["train"]["input_ids"] == [[1, 2], [3], [4, 5, 6]]
    assert capsys.readouterr().err == (
        f"notice: rebuilding the data cache {entry}: train split does not match the digest"
        " recorded in key.json (column input_ids)\n"
    )
    assert cached_splits(tmp_path, "demo", KEY, never)["train"]["input_ids"][0] == [1, 2]


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '{"summaries": "x"}', '{"digests": {"train": "x"}}', "null", '{"digests": ', "\xff"],
)
def test_key_json_of_another_shape_is_rebuilt_once(tmp_path: Path, capsys, content: str):
    cached_splits(tmp_path, "demo", KEY, make_splits)
    entry = cache_path(tmp_path, "demo", KEY)
    (entry / "key.json").write_bytes(content.encode("latin-1"))
    capsys.readouterr()
    build = CountingBuild()
    assert cached_splits(tmp_path, "demo", KEY, build)["val"]["label"] == [0, 1, 1]
    err = capsys.readouterr().err
    assert build.calls == 1 and err.count("\n") == 1, err
    assert err.startswith(f"notice: rebuilding the data cache {entry}: key.json ")
    assert cached_splits(tmp_path, "demo", KEY, never)["test"]["label"] == [0, 1, 2]
    assert not capsys.readouterr().err  # repaired: the next load is silent


def test_digest_covers_offsets_values_and_type():
    import pyarrow as pa

    from lra_bench.data.cache import column_digest

    def digest(values: list, type_=pa.list_(pa.int32())) -> str:
        return column_digest(pa.chunked_array([pa.array(values, type_)]))

    base = digest([[1, 2], [3]])
    assert base == digest([[1, 2], [3]])
    assert base != digest([[1], [2, 3]])  # a moved boundary
    assert base != digest([[1, 2], [4]])  # a changed value
    assert base != digest([[1, 2], [3]], pa.list_(pa.int64()))  # another type
    assert base != digest([[1, 2], None])  # a null
