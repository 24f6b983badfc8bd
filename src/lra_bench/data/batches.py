"""Batches from cached splits: padding, masks, length bucketing and a resumable training order.

The training stream is a sequence of micro-batches cut from consecutive seeded
permutations of the training set. Micro-batch ``p`` depends only on ``(seed, p)``, so a
resumed run continues exactly where it stopped by restarting at its saved position, and
each rank of a distributed run takes its own share of the same global batch.

With length bucketing the stream is cut into windows of ``window`` batches; each window's
examples are sorted by length, cut into batches (each padded to its longest member) and the
batches of the window are shuffled with a generator seeded by ``(seed, window)``. Batch ``p``
still depends only on ``(seed, p)``.

Collation reads token ids straight from the Arrow buffers of the gathered rows (numpy views,
no Python lists) and pads with one vectorised assignment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, torch.Tensor | None]
Rows = pa.Table | dict[str, list]
CUDA_LOADER_WORKERS = 4  # loader processes when training on CUDA and data.loader_workers is unset
LENGTH_SCAN_ROWS = 8192  # rows per slice when reading the lengths of a split


# --- collation -----------------------------------------------------------------------------------


def token_buffers(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lengths, values)`` of a list column: row i is ``values[starts[i]:starts[i] + lengths[i]]``.

    The arrays are numpy views of the Arrow buffers (no copy for a single-chunk column).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_fixed_size_list(column.type):
        size = column.type.list_size
        values = column.flatten().to_numpy(zero_copy_only=False)
        starts = np.arange(len(column), dtype=np.int64) * size
        return starts, np.full(len(column), size, dtype=np.int64), values
    offsets = column.offsets.to_numpy().astype(np.int64)
    return offsets[:-1], np.diff(offsets), column.values.to_numpy(zero_copy_only=False)


def pad_column(column: pa.Array | pa.ChunkedArray, length: int, mask_zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad (or cut) every row to ``length`` with 0; the mask marks real tokens (None when nothing is padded).

    ``mask_zero`` reproduces the peer code: every id 0 counts as padding, even inside a sequence.
    """
    starts, lengths, values = token_buffers(column)
    lengths = np.minimum(lengths, length)
    rows = len(lengths)
    if rows and bool((lengths == length).all()) and bool((np.diff(starts) == length).all()):
        first = int(starts[0]) if rows else 0  # contiguous full rows: a reshaped view of the values
        ids = torch.from_numpy(values[first : first + rows * length].reshape(rows, length).astype(np.int64))
        valid = None
    else:
        cols = np.arange(length)
        valid_np = cols[None, :] < lengths[:, None]
        ids_np = np.zeros((rows, length), dtype=np.int64)
        ids_np[valid_np] = values[(starts[:, None] + cols[None, :])[valid_np]]
        ids = torch.from_numpy(ids_np)
        valid = None if bool(valid_np.all()) else torch.from_numpy(valid_np)
    if mask_zero:
        return ids, ids != 0
    return ids, valid


def pad_sequences(seqs: Sequence[Sequence[int]], length: int, mask_zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``pad_column`` for Python lists of token ids."""
    return pad_column(pa.array([list(s) for s in seqs], type=pa.list_(pa.int64())), length, mask_zero)


def _as_table(rows: Rows) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else pa.Table.from_pydict(rows)


class Collator:
    """Turn rows (an Arrow table, or a dict of lists) into model inputs: ``input_ids``/``mask``
    (or the ``_1``/``_2`` pair) and ``label``."""

    def __init__(self, max_len: int, pad_to: str, mask_zero: bool, dual: bool) -> None:
        self.max_len, self.pad_to, self.mask_zero, self.dual = max_len, pad_to, mask_zero, dual

    @property
    def columns(self) -> tuple[str, ...]:
        return ("input_ids_1", "input_ids_2") if self.dual else ("input_ids",)

    def _length(self, table: pa.Table) -> int:
        if self.pad_to == "max_len":
            return self.max_len
        longest = max((pc.max(pc.list_value_length(table.column(c))).as_py() or 0) for c in self.columns)
        return min(self.max_len, max(longest, 1))

    def __call__(self, rows: Rows) -> Batch:
        table = _as_table(rows)
        labels = table.column("label").to_numpy()
        batch: Batch = {"label": torch.from_numpy(labels.astype(np.int64))}
        length = self._length(table)
        if self.dual:
            for side in ("1", "2"):
                batch[f"input_ids_{side}"], batch[f"mask_{side}"] = pad_column(table.column(f"input_ids_{side}"), length, self.mask_zero)
        else:
            batch["input_ids"], batch["mask"] = pad_column(table.column("input_ids"), length, self.mask_zero)
        return batch


def example_lengths(data: datasets.Dataset, columns: Sequence[str], max_len: int) -> np.ndarray:
    """Tokens of each example after truncation to ``max_len`` (the longer document of a pair)."""
    arrow = data.with_format("arrow")
    out = np.zeros(len(data), dtype=np.int64)
    for start in range(0, len(data), LENGTH_SCAN_ROWS):
        part = arrow[start : start + LENGTH_SCAN_ROWS]
        for name in columns:
            lengths = pc.list_value_length(part.column(name)).to_numpy(zero_copy_only=False)
            np.maximum(out[start : start + len(lengths)], lengths, out=out[start : start + len(lengths)])
    return np.minimum(out, max_len)


# --- the training order ----------------------------------------------------------------------------


def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=g).numpy()


def stream_slice(num_examples: int, start: int, count: int, seed: int) -> np.ndarray:
    """Positions ``start .. start + count`` of the concatenated seeded epoch permutations."""
    out: list[np.ndarray] = []
    taken = 0
    while taken < count:
        epoch, offset = divmod(start + taken, num_examples)
        part = _epoch_permutation(num_examples, seed, epoch)[offset : offset + count - taken]
        out.append(part)
        taken += len(part)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def training_indices(num_examples: int, batch_size: int, position: int, seed: int) -> list[int]:
    """Example indices of micro-batch ``position``: a slice of the concatenated seeded epoch permutations."""
    return stream_slice(num_examples, position * batch_size, batch_size, seed).tolist()


def bucket_window(lengths: np.ndarray, batch_size: int, window: int, index: int, seed: int) -> np.ndarray:
    """The ``[window, batch_size]`` batches of window ``index``: its stream slice sorted by length,
    cut into batches, the batches in an order drawn from ``(seed, index)``."""
    indices = stream_slice(len(lengths), index * window * batch_size, window * batch_size, seed)
    by_length = indices[np.argsort(lengths[indices], kind="stable")]
    batches = by_length.reshape(window, batch_size)
    return batches[np.random.default_rng([seed, index, 0x6275636B]).permutation(window)]


class _TrainBatches(Dataset):
    """Micro-batch ``position`` of the global stream; rank ``rank`` of ``world`` takes its equal share.

    With ``lengths`` (one per example) the stream is length-bucketed in windows of ``window`` batches.
    """

    def __init__(
        self, data: datasets.Dataset, collate: Collator, batch_size: int, seed: int, rank: int, world: int,
        lengths: np.ndarray | None = None, window: int = 1,
    ) -> None:  # fmt: skip
        self.data, self.collate, self.batch_size, self.seed = data.with_format("arrow"), collate, batch_size, seed
        self.rank, self.world, self.lengths, self.window = rank, world, lengths, window
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return 2**62

    def indices(self, position: int) -> np.ndarray:
        """The global micro-batch ``position`` (all ranks' examples)."""
        if self.lengths is None:
            return stream_slice(len(self.data), position * self.batch_size, self.batch_size, self.seed)
        index, slot = divmod(position, self.window)
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, bucket_window(self.lengths, self.batch_size, self.window, index, self.seed))
        return self._cached[1][slot]

    def __getitem__(self, position: int) -> Batch:
        share = self.batch_size // self.world
        mine = self.indices(position)[self.rank * share : (self.rank + 1) * share]
        return self.collate(self.data[mine.tolist()])


class _EvalBatches(Dataset):
    """Consecutive batches of the split (of ``order`` when given); with several ranks, batch i goes to rank i % world."""

    def __init__(self, data: datasets.Dataset, collate: Collator, batch_size: int, rank: int, world: int, order: np.ndarray | None = None) -> None:
        self.data, self.collate, self.batch_size, self.rank, self.world = data.with_format("arrow"), collate, batch_size, rank, world
        self.order = order

    def __len__(self) -> int:
        total = -(-len(self.data) // self.batch_size)
        return len(range(self.rank, total, self.world))

    def __getitem__(self, i: int) -> Batch:
        start = (self.rank + i * self.world) * self.batch_size
        if self.order is None:
            return self.collate(self.data[start : start + self.batch_size])
        return self.collate(self.data[self.order[start : start + self.batch_size].tolist()])


# --- loaders -----------------------------------------------------------------------------------------


def loader_workers(setting: int | None, device: torch.device) -> int:
    """Loader processes: the setting when given; else a few on CUDA (the GPU must not wait) and none on CPU."""
    if setting is not None:
        return setting
    return min(CUDA_LOADER_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0


def _loader_options(workers: int, pin_memory: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        options["prefetch_factor"] = 4
    return options


def train_stream(
    data: datasets.Dataset,
    collate: Collator,
    batch_size: int,
    seed: int,
    start: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
    lengths: np.ndarray | None = None,
    window: int = 1,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Endless micro-batches of global size ``batch_size`` from position ``start`` on, this rank's share
    (length-bucketed in windows of ``window`` batches when ``lengths`` is given)."""
    loader = DataLoader(
        _TrainBatches(data, collate, batch_size, seed, rank, world, lengths, window),
        batch_size=None,
        sampler=range(start, 2**62),
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (exact resume)
        **_loader_options(workers, pin_memory),
    )
    return iter(loader)


def eval_batches(
    data: datasets.Dataset, collate: Collator, batch_size: int, workers: int, rank: int = 0, world: int = 1,
    lengths: np.ndarray | None = None, pin_memory: bool = False,
) -> DataLoader:  # fmt: skip
    """Every example once over all ranks, last partial batch included (sorted by ``lengths`` when given)."""
    order = None if lengths is None else np.argsort(lengths, kind="stable")
    dataset = _EvalBatches(data, collate, batch_size, rank, world, order)
    options = _loader_options(workers, pin_memory)
    return DataLoader(dataset, batch_size=None, generator=torch.Generator(), persistent_workers=workers > 0, **options)
