"""The bench's data mode: the training loop's own loader, timed alone (no model).

It composes the run configuration of the bench's task (plus the ``run.*`` overrides), loads
the task's cached splits as a run does, and times ``batches`` batches of the training stream
(or of the dev loader) after ``warmup`` untimed ones: milliseconds per batch (median and
mean), batches/s, and tokens/s of real and of padded tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig

from lra_bench.data.batches import Batch
from lra_bench.step import token_counts


def _loader(cfg: DictConfig, run_cfg: DictConfig) -> tuple[Iterator[Batch], int]:
    """The run's batches of ``cfg.data_split`` and the loader processes they use."""
    from lra_bench.data.loaders import prepare_data
    from lra_bench.distributed import DistInfo

    device = torch.device("cpu")
    data = prepare_data(run_cfg, DistInfo(), device)
    if cfg.data_split == "train":
        return data.stream(run_cfg, 0), data.workers
    return iter(_forever(data.val)), data.workers


def _forever(loader: Any) -> Iterator[Batch]:
    while True:
        yield from loader


def time_loader(cfg: DictConfig, run_cfg: DictConfig) -> dict[str, Any]:
    """One row: the loader of ``run_cfg`` timed over ``cfg.batches`` batches."""
    batches, workers = _loader(cfg, run_cfg)
    for _ in range(cfg.warmup):
        next(batches)
    times: list[float] = []
    real = padded = 0
    for _ in range(cfg.batches):
        t0 = time.perf_counter()
        batch = next(batches)
        times.append(time.perf_counter() - t0)
        r, p = token_counts(batch)
        real, padded = real + r, padded + p
    total = sum(times)
    median_ms = 1000 * statistics.median(times)
    return {
        "task": run_cfg.task.name,
        "split": cfg.data_split,
        "batch": run_cfg.trainer.batch_size
        if cfg.data_split == "train"
        else (run_cfg.trainer.eval_batch_size or run_cfg.trainer.batch_size),
        "n": run_cfg.task.max_len,
        "workers": workers,
        "bucket": bool(run_cfg.data.bucket),
        "pad_to": "batch" if run_cfg.data.bucket else run_cfg.data.pad_to,
        "ms_per_batch": median_ms,
        "mean_ms": 1000 * total / len(times),
        "batches_per_s": len(times) / total if total > 0 else float("nan"),
        "real_tokens_per_s": real / total if total > 0 else float("nan"),
        "padded_tokens_per_s": padded / total if total > 0 else float("nan"),
        "real_fraction": real / padded if padded else float("nan"),
        "repeats": len(times),
        "status": "ok",
        "error": "",
    }
