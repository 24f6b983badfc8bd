"""A run's loaders: the training stream and the dev and test loaders, this rank's share.

The training loop and the bench's loader mode read their batches from here, so both see the
same padding, bucketing, workers and test-set rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from lra_bench.data import load_splits
from lra_bench.data.batches import (
    Collator,
    eval_batches,
    example_lengths,
    loader_workers,
    train_stream,
)
from lra_bench.distributed import DistInfo
from lra_bench.training_rules import drop_partial_batch


@dataclass
class RunData:
    """The training stream's inputs and the dev and test loaders, this rank's share."""

    train: Any  # the training split (a datasets.Dataset)
    collate: Collator
    val: Any
    test: Any
    info: DistInfo
    workers: int = 0
    pin_memory: bool = False
    lengths: Any = None  # training examples' lengths when batches are length-bucketed

    def stream(self, cfg: DictConfig, step: int) -> Any:
        """Micro-batches from training step ``step`` on (a resumed run continues where it
        stopped)."""
        trainer_cfg = cfg.trainer
        micro_batch = trainer_cfg.batch_size // trainer_cfg.grad_accum  # global; 1/world a rank
        start = step * trainer_cfg.grad_accum
        rank, world = self.info.rank, self.info.world_size
        return train_stream(
            self.train, self.collate, micro_batch, cfg.seed, start, self.workers, rank, world,
            lengths=self.lengths, window=cfg.data.bucket_window, pin_memory=self.pin_memory,
        )  # fmt: skip


def prepare_data(cfg: DictConfig, info: DistInfo, device: torch.device) -> RunData:
    """Load (or build) the task's splits; the dev and test loaders cover every example once.

    With ``data.bucket`` batches are padded to their longest member, the training stream is
    length-bucketed and the dev and test sets are read in order of length.
    """
    splits = load_splits(cfg)
    pad_to = "batch" if cfg.data.bucket else cfg.data.pad_to
    collate = Collator(cfg.task.max_len, pad_to, cfg.data.mask_zero, cfg.task.dual)
    eval_bs = cfg.trainer.eval_batch_size or cfg.trainer.batch_size
    workers, pin = loader_workers(cfg.data.loader_workers, device), device.type == "cuda"
    rank, world = info.rank, info.world_size

    def lengths(split: str) -> Any:
        if not cfg.data.bucket:
            return None
        return example_lengths(splits[split], collate.columns, cfg.task.max_len)

    val = eval_batches(splits["val"], collate, eval_bs, workers, rank, world, lengths("val"), pin)
    splits["test"] = drop_partial_batch(
        splits["test"], cfg.trainer.batch_size, cfg.data.test_drop_last
    )
    test = eval_batches(
        splits["test"], collate, eval_bs, workers, rank, world, lengths("test"), pin
    )
    return RunData(splits["train"], collate, val, test, info, workers, pin, lengths("train"))
