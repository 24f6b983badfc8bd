"""Batches from cached splits: padding, masks, length bucketing and a resumable training order.

The training stream is a sequence of micro-batches cut from consecutive seeded
permutations of the training set. Micro-batch ``p`` depends only on ``(seed, p)``, so a
resumed run continues exactly where it stopped by restarting at its saved position, and
each rank of a distributed run takes its own share of the same global batch.

With length bucketing the stream is cut into windows of ``window`` batches; each window's
examples are sorted by length, cut into batches (each padded to its longest member) and the
batches of the window are shuffled with a generator seeded by ``(seed, window)``. Batch ``p``
still depends only on ``(seed, p)``.

Collation reads token ids straight from the Arrow buffers of the split (numpy views of the
memory-mapped chunks, no Python lists) and pads with vectorised gathers, one per chunk touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, torch.Tensor | None]
Rows = pa.Table | dict[str, list]
CUDA_LOADER_WORKERS = 4  # loader processes when training on CUDA and data.loader_workers is unset


# --- collation -----------------------------------------------------------------------------------


def token_buffers(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lengths, values)`` of a list column: row i is
    ``values[starts[i]:starts[i] + lengths[i]]``.

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


class TokenColumn:
    """One token-id list column as numpy views of its Arrow chunks (a memory-mapped split stays
    on disk): per row its chunk, start and length; ``pad`` gathers and pads rows chunk by chunk."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        parts = [token_buffers(chunk) for chunk in column.chunks]
        self.values = [values for _, _, values in parts]
        self.grids = [_as_grid(*part) for part in parts]
        self.starts = (
            np.concatenate([starts for starts, _, _ in parts]) if parts else np.zeros(0, np.int64)
        )
        self.lengths = (
            np.concatenate([lengths for _, lengths, _ in parts]) if parts else np.zeros(0, np.int64)
        )
        self.chunk_of = np.repeat(np.arange(len(parts)), [len(lengths) for _, lengths, _ in parts])
        self.row_in_chunk = (
            np.concatenate([np.arange(len(lengths)) for _, lengths, _ in parts])
            if parts
            else np.zeros(0, np.int64)
        )

    def pad(self, indices: np.ndarray, length: int) -> np.ndarray:
        """Rows ``indices`` right-padded with 0 (or cut) to ``length``: int64
        ``[len(indices), length]``."""
        ids = np.zeros((len(indices), length), dtype=np.int64)
        lengths, starts, chunks = (
            np.minimum(self.lengths[indices], length),
            self.starts[indices],
            self.chunk_of[indices],
        )
        cols = np.arange(length)
        for chunk in np.unique(chunks):
            rows = np.flatnonzero(chunks == chunk)
            values, grid = self.values[chunk], self.grids[chunk]
            if (
                grid is not None and grid.shape[1] >= length
            ):  # fixed-length rows: a view [rows, size]
                ids[rows] = grid[self.row_in_chunk[indices[rows]], :length]
            else:
                valid = cols[None, :] < lengths[rows, None]
                block = np.zeros((len(rows), length), dtype=np.int64)
                block[valid] = values[(starts[rows, None] + cols[None, :])[valid]]
                ids[rows] = block
        return ids


def _as_grid(starts: np.ndarray, lengths: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """The values as a ``[rows, size]`` view when every
    row has the same length and rows are contiguous."""
    if len(lengths) == 0 or lengths[0] == 0 or not bool((lengths == lengths[0]).all()):
        return None
    size, first = int(lengths[0]), int(starts[0])
    if not bool((starts == first + size * np.arange(len(starts))).all()):
        return None
    return values[first : first + size * len(starts)].reshape(len(starts), size)


def _as_table(rows: Rows | datasets.Dataset) -> pa.Table:
    if isinstance(rows, datasets.Dataset):
        return rows.with_format("arrow")[
            :
        ]  # the memory-mapped table itself when the split has no index mapping
    return rows if isinstance(rows, pa.Table) else pa.Table.from_pydict(rows)


class TokenRows:
    """The rows of a split (a Dataset, an Arrow table or a dict of lists) for collation: labels
    and token columns as numpy views, gathered by index without Python lists."""

    def __init__(self, rows: Rows | datasets.Dataset, columns: Sequence[str]) -> None:
        table = _as_table(rows)
        self.labels = table.column("label").to_numpy().astype(np.int64)
        self.columns = {name: TokenColumn(table.column(name)) for name in columns}

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self, max_len: int) -> np.ndarray:
        """Tokens of each row after truncation to ``max_len`` (the longer document of a pair)."""
        longest = np.maximum.reduce([column.lengths for column in self.columns.values()])
        return np.minimum(longest, max_len)


def pad_column(
    column: pa.Array | pa.ChunkedArray, length: int, mask_zero: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad (or cut) every row of a list column to ``length`` with 0; the mask marks real
    tokens (None when nothing is padded).

    ``mask_zero`` reproduces the peer code: every id 0 counts as padding, even inside a sequence.
    """
    tokens = TokenColumn(
        column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    )
    return _with_mask(
        tokens.pad(np.arange(len(tokens.lengths)), length),
        np.minimum(tokens.lengths, length),
        mask_zero,
    )


def _with_mask(
    ids: np.ndarray, lengths: np.ndarray, mask_zero: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    tensor = torch.from_numpy(ids)
    if mask_zero:
        return tensor, tensor != 0
    length = ids.shape[1]
    if bool((lengths == length).all()):
        return tensor, None
    return tensor, torch.from_numpy(np.arange(length)[None, :] < lengths[:, None])


def pad_sequences(
    seqs: Sequence[Sequence[int]], length: int, mask_zero: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``pad_column`` for Python lists of token ids."""
    return pad_column(
        pa.array([list(s) for s in seqs], type=pa.list_(pa.int64())), length, mask_zero
    )


class Collator:
    """Turn rows into model inputs: ``input_ids``/``mask``
    (or the ``_1``/``_2`` pair) and ``label``.

    ``collator(rows)`` takes an Arrow table or a dict of lists; ``collator.gather(token_rows,
    indices)`` takes rows of a split prepared once as ``TokenRows`` (the loaders' path).
    """

    def __init__(self, max_len: int, pad_to: str, mask_zero: bool, dual: bool) -> None:
        self.max_len, self.pad_to, self.mask_zero, self.dual = max_len, pad_to, mask_zero, dual

    @property
    def columns(self) -> tuple[str, ...]:
        return ("input_ids_1", "input_ids_2") if self.dual else ("input_ids",)

    def rows(self, data: Rows | datasets.Dataset) -> TokenRows:
        return TokenRows(data, self.columns)

    def __call__(self, rows: Rows) -> Batch:
        token_rows = self.rows(rows)
        return self.gather(token_rows, np.arange(len(token_rows)))

    def gather(self, rows: TokenRows, indices: np.ndarray) -> Batch:
        """The batch of rows ``indices``, padded to
        ``max_len`` or to its longest row (``pad_to``)."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = {
            name: np.minimum(column.lengths[indices], self.max_len)
            for name, column in rows.columns.items()
        }
        length = self.max_len
        if self.pad_to == "batch":
            length = max(1, max((int(v.max()) if len(v) else 0) for v in lengths.values()))
        batch: Batch = {"label": torch.from_numpy(rows.labels[indices])}
        for name, column in rows.columns.items():
            mask_name = name.replace("input_ids", "mask")
            batch[name], batch[mask_name] = _with_mask(
                column.pad(indices, length), np.minimum(lengths[name], length), self.mask_zero
            )
        return batch


def example_lengths(data: datasets.Dataset, columns: Sequence[str], max_len: int) -> np.ndarray:
    """Tokens of each example after truncation to ``max_len`` (the longer document of a pair)."""
    return TokenRows(data, columns).lengths(max_len)


# --- the training order ---------------------------------------------------------------------------


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


def bucket_window(
    lengths: np.ndarray, batch_size: int, window: int, index: int, seed: int
) -> np.ndarray:
    """The ``[window, batch_size]`` batches of window ``index``: its stream slice sorted by length,
    cut into batches, the batches in an order drawn from ``(seed, index)``."""
    indices = stream_slice(len(lengths), index * window * batch_size, window * batch_size, seed)
    by_length = indices[np.argsort(lengths[indices], kind="stable")]
    batches = by_length.reshape(window, batch_size)
    return batches[np.random.default_rng([seed, index, 0x6275636B]).permutation(window)]


class _TrainBatches(Dataset):
    """Micro-batch ``position`` of the global stream;
    rank ``rank`` of ``world`` takes its equal share.

    With ``lengths`` (one per example) the stream is
    length-bucketed in windows of ``window`` batches.
    """

    def __init__(
        self, data: datasets.Dataset, collate: Collator, batch_size: int, seed: int, rank: int,
        world: int, lengths: np.ndarray | None = None, window: int = 1,
    ) -> None:  # fmt: skip
        self.data, self.collate, self.batch_size, self.seed = data, collate, batch_size, seed
        self.rank, self.world, self.lengths, self.window = rank, world, lengths, window
        self._rows: TokenRows | None = None
        self._cached: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:  # loader processes build their own views
        return {**self.__dict__, "_rows": None, "_cached": None}

    def __len__(self) -> int:
        return 2**62

    @property
    def rows(self) -> TokenRows:
        if self._rows is None:
            self._rows = self.collate.rows(self.data)
        return self._rows

    def indices(self, position: int) -> np.ndarray:
        """The global micro-batch ``position`` (all ranks' examples)."""
        if self.lengths is None:
            return stream_slice(
                len(self.data), position * self.batch_size, self.batch_size, self.seed
            )
        index, slot = divmod(position, self.window)
        if self._cached is None or self._cached[0] != index:
            self._cached = (
                index,
                bucket_window(self.lengths, self.batch_size, self.window, index, self.seed),
            )
        return self._cached[1][slot]

    def __getitem__(self, position: int) -> Batch:
        share = self.batch_size // self.world
        mine = self.indices(position)[self.rank * share : (self.rank + 1) * share]
        return self.collate.gather(self.rows, mine)


class _EvalBatches(Dataset):
    """Consecutive batches of the split (of ``order`` when given);
    with several ranks, batch i goes to rank i % world."""

    def __init__(
        self,
        data: datasets.Dataset,
        collate: Collator,
        batch_size: int,
        rank: int,
        world: int,
        order: np.ndarray | None = None,
    ) -> None:
        self.data, self.collate, self.batch_size, self.rank, self.world = (
            data,
            collate,
            batch_size,
            rank,
            world,
        )
        self.order = np.arange(len(data)) if order is None else order
        self._rows: TokenRows | None = None

    def __getstate__(self) -> dict[str, Any]:  # loader processes build their own views
        return {**self.__dict__, "_rows": None}

    def __len__(self) -> int:
        total = -(-len(self.data) // self.batch_size)
        return len(range(self.rank, total, self.world))

    def __getitem__(self, i: int) -> Batch:
        if self._rows is None:
            self._rows = self.collate.rows(self.data)
        start = (self.rank + i * self.world) * self.batch_size
        return self.collate.gather(self._rows, self.order[start : start + self.batch_size])


# --- loaders --------------------------------------------------------------------------------------


def loader_workers(setting: int | None, device: torch.device) -> int:
    """Loader processes: the setting when given; else a few
    on CUDA (the GPU must not wait) and none on CPU."""
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
    """Endless micro-batches of global size ``batch_size`` from position ``start`` on, this rank's
    share (length-bucketed in windows of ``window`` batches when ``lengths`` is given)."""
    loader = DataLoader(
        _TrainBatches(data, collate, batch_size, seed, rank, world, lengths, window),
        batch_size=None,
        sampler=range(start, 2**62),
        generator=torch.Generator(),  # the loader draws nothing from the global RNG (exact resume)
        **_loader_options(workers, pin_memory),
    )
    return iter(loader)


def eval_batches(
    data: datasets.Dataset, collate: Collator, batch_size: int, workers: int, rank: int = 0,
    world: int = 1, lengths: np.ndarray | None = None, pin_memory: bool = False,
) -> DataLoader:  # fmt: skip
    """Every example once over all ranks, last partial
    batch included (sorted by ``lengths`` when given)."""
    order = None if lengths is None else np.argsort(lengths, kind="stable")
    dataset = _EvalBatches(data, collate, batch_size, rank, world, order)
    options = _loader_options(workers, pin_memory)
    return DataLoader(
        dataset,
        batch_size=None,
        generator=torch.Generator(),
        persistent_workers=workers > 0,
        **options,
    )
