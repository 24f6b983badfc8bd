"""DistributedDataParallel plumbing: one run on N processes started by ``torchrun``.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op for a
single process, so the training loop reads the same either way.

The process group waits ``trainer.dist_timeout_s`` seconds (default 600) for a peer before a
collective fails, instead of torch's 30 minutes: a rank that died or stopped answering ends the
run within that time with one line from rank 0 (``peer_failures``); the others exit with
status 2 quietly. With NCCL, torch's watchdog applies the same timeout and may end the process
itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lra_bench.errors import LraBenchError, RunError
from lra_bench.runtime import make_current, run_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


DEFAULT_TIMEOUT_S = 600.0  # trainer.dist_timeout_s: how long a collective waits for a peer


def init_distributed(
    device_name: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun (NCCL on GPU, gloo on CPU); pick this
    rank's device.

    ``timeout_s``: how long the rendezvous and each collective wait for the other ranks.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    device = run_device(device_name, local_rank)
    make_current(device)
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, local_rank or 0)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
    return info, device


class PeerLost(RunError):
    """Another rank died or stopped answering; the run cannot go on."""


def _is_peer_failure(err: BaseException) -> bool:
    """A failed collective: torch's distributed errors, or gloo's and NCCL's RuntimeErrors."""
    dist_error = getattr(dist, "DistError", ())
    text = str(err)
    return isinstance(err, dist_error) or any(
        mark in text for mark in ("/gloo/", "NCCL", "ProcessGroup", "Connection reset by peer")
    )


@contextmanager
def peer_failures(timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Under torchrun, a collective failing because a peer died or hung becomes one line on rank 0.

    Rank 0 raises ``PeerLost`` (printed as ``error: ...``); the other ranks exit with status 2
    without a message, so the job's log holds one line instead of one traceback per rank.
    """
    try:
        yield
    except RuntimeError as err:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or isinstance(err, LraBenchError) or not _is_peer_failure(err):
            raise
        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(2) from None
        first = " ".join(str(err).split())[:160]
        raise PeerLost(
            f"another of the {world} ranks died or did not answer within trainer.dist_timeout_s="
            f"{timeout_s:g} s ({first}); check that rank's log, then rerun the command to resume "
            "from the last checkpoint"
        ) from None


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity on one process)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def seed_dropout_streams(seed: int, info: DistInfo) -> None:
    """Under DDP, give each rank its own dropout stream (``seed + rank``; the data order keeps
    ``seed``).

    Called after the model is built, so every rank starts from the same weights. One process
    keeps its single stream as it is.
    """
    if info.enabled:
        torch.manual_seed(seed + info.rank)


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` under DistributedDataParallel when there are several ranks, else itself.

    Every parameter gets a gradient in every variant (a variant that ignores ``k`` still
    trains the fused qkv projection it is a slice of), so no search for unused parameters.
    """
    if not info.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
