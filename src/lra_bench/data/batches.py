"""Batches from cached splits: padding, masks, and a resumable training order.

The training stream is a sequence of micro-batches cut from consecutive seeded
permutations of the training set. Micro-batch ``p`` depends only on ``(seed, p)``, so a
resumed run continues exactly where it stopped by restarting at its saved position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import datasets
import torch
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, torch.Tensor | None]


def pad_sequences(seqs: Sequence[Sequence[int]], length: int, mask_zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad with 0 to ``length``; the mask marks real tokens (None when nothing is padded).

    ``mask_zero`` reproduces the peer code: every id 0 counts as padding, even inside a sequence.
    """
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    lengths = torch.tensor([min(len(s), length) for s in seqs])
    for row, seq in enumerate(seqs):
        ids[row, : lengths[row]] = torch.as_tensor(seq[:length], dtype=torch.long)
    if mask_zero:
        return ids, ids != 0
    if bool((lengths == length).all()):
        return ids, None
    return ids, torch.arange(length)[None, :] < lengths[:, None]


class Collator:
    """Turn Arrow rows into model inputs: ``input_ids``/``mask`` (or the ``_1``/``_2`` pair) and ``label``."""

    def __init__(self, max_len: int, pad_to: str, mask_zero: bool, dual: bool) -> None:
        self.max_len, self.pad_to, self.mask_zero, self.dual = max_len, pad_to, mask_zero, dual

    def _length(self, *columns: Sequence[Sequence[int]]) -> int:
        if self.pad_to == "max_len":
            return self.max_len
        return min(self.max_len, max(len(s) for col in columns for s in col))

    def __call__(self, rows: dict[str, list]) -> Batch:
        batch: Batch = {"label": torch.as_tensor(rows["label"], dtype=torch.long)}
        if self.dual:
            length = self._length(rows["input_ids_1"], rows["input_ids_2"])
            for side in ("1", "2"):
                batch[f"input_ids_{side}"], batch[f"mask_{side}"] = pad_sequences(rows[f"input_ids_{side}"], length, self.mask_zero)
        else:
            batch["input_ids"], batch["mask"] = pad_sequences(rows["input_ids"], self._length(rows["input_ids"]), self.mask_zero)
        return batch


def training_indices(num_examples: int, batch_size: int, position: int, seed: int) -> list[int]:
    """Example indices of micro-batch ``position``: a slice of the concatenated seeded epoch permutations."""
    start = position * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_examples)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(num_examples, generator=g)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return out


class _TrainBatches(Dataset):
    """Micro-batch ``position`` of the global stream; rank ``rank`` of ``world`` takes its equal share."""

    def __init__(self, data: datasets.Dataset, collate: Collator, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.data, self.collate, self.batch_size, self.seed = data, collate, batch_size, seed
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, position: int) -> Batch:
        indices = training_indices(len(self.data), self.batch_size, position, self.seed)
        share = self.batch_size // self.world
        return self.collate(self.data[indices[self.rank * share : (self.rank + 1) * share]])


class _EvalBatches(Dataset):
    """Consecutive batches of the split; with several ranks, batch i goes to rank i % world."""

    def __init__(self, data: datasets.Dataset, collate: Collator, batch_size: int, rank: int, world: int) -> None:
        self.data, self.collate, self.batch_size, self.rank, self.world = data, collate, batch_size, rank, world

    def __len__(self) -> int:
        total = -(-len(self.data) // self.batch_size)
        return len(range(self.rank, total, self.world))

    def __getitem__(self, i: int) -> Batch:
        start = (self.rank + i * self.world) * self.batch_size
        return self.collate(self.data[start : start + self.batch_size])


def train_stream(
    data: datasets.Dataset,
    collate: Collator,
    batch_size: int,
    seed: int,
    start: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
) -> Iterator[Batch]:
    """Endless micro-batches of global size ``batch_size`` from position ``start`` on, this rank's share."""
    loader = DataLoader(
        _TrainBatches(data, collate, batch_size, seed, rank, world),
        batch_size=None,
        sampler=range(start, 2**62),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (exact resume)
    )
    return iter(loader)


def eval_batches(
    data: datasets.Dataset, collate: Collator, batch_size: int, workers: int, rank: int = 0, world: int = 1
) -> DataLoader:
    """Every example once over all ranks, last partial batch included."""
    dataset = _EvalBatches(data, collate, batch_size, rank, world)
    return DataLoader(dataset, batch_size=None, num_workers=workers, generator=torch.Generator())
