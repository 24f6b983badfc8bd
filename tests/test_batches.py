"""Batches: Arrow collation equals plain list padding; the length-bucketed stream is a seeded,
position-addressable reordering of the plain one; evaluation order does not change accuracy."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

from lra_bench.data.batches import (
    Collator,
    _TrainBatches,
    bucket_window,
    eval_batches,
    example_lengths,
    stream_slice,
    train_stream,
)


def reference_pad(
    seqs: list[list[int]], length: int, mask_zero: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Padding written out row by row with Python lists (what collation must equal)."""
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    lengths = [min(len(s), length) for s in seqs]
    for row, seq in enumerate(seqs):
        ids[row, : lengths[row]] = torch.tensor(seq[:length], dtype=torch.long)
    if mask_zero:
        return ids, ids != 0
    if all(n == length for n in lengths):
        return ids, None
    return ids, torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def reference_collate(
    rows: dict[str, list], max_len: int, pad_to: str, mask_zero: bool, dual: bool
) -> dict:
    columns = ["input_ids_1", "input_ids_2"] if dual else ["input_ids"]
    length = (
        max_len
        if pad_to == "max_len"
        else min(max_len, max(len(s) for c in columns for s in rows[c]))
    )
    out: dict = {"label": torch.tensor(rows["label"], dtype=torch.long)}
    for c in columns:
        mask_key = c.replace("input_ids", "mask")
        out[c], out[mask_key] = reference_pad(rows[c], length, mask_zero)
    return out


def random_rows(
    rng: np.random.Generator, n: int, low: int, high: int, dual: bool = False, vocab: int = 9
) -> dict[str, list]:
    def seqs() -> list[list[int]]:
        return [rng.integers(0, vocab, rng.integers(low, high + 1)).tolist() for _ in range(n)]

    rows = {"input_ids_1": seqs(), "input_ids_2": seqs()} if dual else {"input_ids": seqs()}
    return {**rows, "label": rng.integers(0, 4, n).tolist()}


def as_dataset(
    rows: dict[str, list], value_type: pa.DataType, chunk_rows: int, fixed: int | None = None
) -> datasets.Dataset:
    """The rows as an Arrow dataset of several record batches (as the cache stores splits)."""
    columns = {}
    for key, values in rows.items():
        if key == "label":
            columns[key] = pa.array(values, type=pa.int64())
        elif fixed is not None:
            columns[key] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate(values), type=value_type), fixed
            )
        else:
            columns[key] = pa.array(values, type=pa.list_(value_type))
    table = pa.table(columns)
    return datasets.Dataset(pa.Table.from_batches(table.to_batches(max_chunksize=chunk_rows)))


def assert_same_batch(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        if want[key] is None:
            assert got[key] is None, key
        else:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pad_to", ["max_len", "batch"])
@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("dual", [False, True])
def test_arrow_collation_equals_list_padding(seed, pad_to, mask_zero, dual):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 40, 1, 30, dual=dual)
    data = as_dataset(rows, pa.uint8(), chunk_rows=7).with_format("arrow")
    collate = Collator(24, pad_to, mask_zero, dual)  # some rows longer than max_len: cut
    picks = rng.permutation(40)[:9].tolist()
    sub = {k: [v[i] for i in picks] for k, v in rows.items()}
    assert_same_batch(collate(data[picks]), reference_collate(sub, 24, pad_to, mask_zero, dual))
    assert_same_batch(
        collate(sub), reference_collate(sub, 24, pad_to, mask_zero, dual)
    )  # lists too


@pytest.mark.parametrize("fixed", [None, 16])
@pytest.mark.parametrize("max_len", [16, 12])
def test_fixed_length_rows_collate_unmasked_or_cut(fixed, max_len):
    rng = np.random.default_rng(3)
    rows = random_rows(rng, 20, 16, 16, vocab=256)
    data = as_dataset(rows, pa.int16(), chunk_rows=6, fixed=fixed).with_format("arrow")
    picks = [19, 0, 7, 7, 12]
    sub = {k: [v[i] for i in picks] for k, v in rows.items()}
    got = Collator(max_len, "max_len", False, False)(data[picks])
    assert got["mask"] is None
    assert_same_batch(got, reference_collate(sub, max_len, "max_len", False, False))


def lengths_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 500, n)


def test_bucketed_windows_reorder_the_plain_stream_and_cut_padding():
    lengths, batch, window = lengths_of(1000), 8, 10
    plain_padding = bucketed_padding = 0
    for index in range(5):  # windows cross epoch boundaries (1000 examples, 80 per window)
        batches = bucket_window(lengths, batch, window, index, seed=3)
        plain = stream_slice(1000, index * window * batch, window * batch, seed=3)
        assert sorted(batches.reshape(-1).tolist()) == sorted(
            plain.tolist()
        )  # same examples, same counts
        per_batch = lengths[batches]
        assert all(
            per_batch[i].max() <= per_batch[j].min() or per_batch[j].max() <= per_batch[i].min()
            for i in range(window)
            for j in range(i)
        )
        plain_padding += int(
            (
                lengths[plain.reshape(window, batch)].max(1, keepdims=True)
                - lengths[plain.reshape(window, batch)]
            ).sum()
        )
        bucketed_padding += int((per_batch.max(1, keepdims=True) - per_batch).sum())
    assert bucketed_padding < plain_padding / 5
    assert not np.array_equal(
        bucket_window(lengths, batch, window, 0, seed=3),
        bucket_window(lengths, batch, window, 0, seed=4),
    )
    order = [tuple(b) for b in bucket_window(lengths, batch, window, 0, seed=3)]
    assert order != sorted(
        order, key=lambda b: lengths[list(b)].max()
    )  # batch order shuffled in the window


@pytest.mark.parametrize("bucket", [False, True])
def test_micro_batch_depends_only_on_seed_and_position_and_ranks_split_it(bucket):
    rng = np.random.default_rng(1)
    rows = random_rows(rng, 50, 1, 40)
    data = as_dataset(rows, pa.uint8(), chunk_rows=9)
    lengths = example_lengths(data, ("input_ids",), 64) if bucket else None
    assert lengths is None or lengths.tolist() == [len(s) for s in rows["input_ids"]]
    collate = Collator(64, "batch", False, False)
    stream = train_stream(data, collate, 4, seed=5, start=0, workers=0, lengths=lengths, window=3)
    sequential = [next(stream) for _ in range(20)]
    for position in (
        0,
        4,
        7,
        13,
        19,
    ):  # a resumed stream starts at its position and goes on identically
        resumed = train_stream(
            data, collate, 4, seed=5, start=position, workers=0, lengths=lengths, window=3
        )
        for offset in range(2):
            if position + offset < 20:
                assert_same_batch(next(resumed), sequential[position + offset])
    for position in (2, 11):
        whole = _TrainBatches(data, collate, 4, 5, 0, 1, lengths, 3).indices(position)
        shares = [
            _TrainBatches(data, collate, 4, 5, rank, 2, lengths, 3)[position] for rank in range(2)
        ]
        labels = torch.cat([s["label"] for s in shares])
        assert labels.tolist() == [rows["label"][i] for i in whole]


@pytest.mark.parametrize("world", [1, 2])
def test_length_ordered_evaluation_gives_the_same_accuracy(world):
    from lra_bench.compose import compose_config
    from lra_bench.model import build_model

    torch.manual_seed(0)
    model = build_model(
        compose_config(["task.max_len=64", "task.num_classes=4", "model.dropout=0"])
    ).eval()
    rng = np.random.default_rng(2)
    rows = random_rows(rng, 37, 1, 64, vocab=17)
    data = as_dataset(rows, pa.uint8(), chunk_rows=10)
    collate = Collator(64, "batch", False, False)
    lengths = example_lengths(data, ("input_ids",), 64)

    def predictions(order_by: np.ndarray | None) -> dict[int, int]:
        """Each example's predicted class, over all ranks' batches."""
        order = np.arange(37) if order_by is None else np.argsort(order_by, kind="stable")
        out: dict[int, int] = {}
        for rank in range(world):
            loader = eval_batches(data, collate, 5, 0, rank, world, order_by)
            for i, batch in enumerate(loader):
                start = (rank + i * world) * 5
                with torch.no_grad():
                    out.update(
                        zip(
                            order[start : start + 5].tolist(),
                            model(batch).argmax(-1).tolist(),
                            strict=True,
                        )
                    )
        return out

    plain, ordered = predictions(None), predictions(lengths)
    assert len(plain) == 37 and plain == ordered
