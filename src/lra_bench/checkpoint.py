"""Atomic checkpoints (written to a temporary sibling and renamed, loaded with ``weights_only=True``)
and the per-rank random streams they carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lra_bench.distributed import DistInfo
from lra_bench.io import atomic_write


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Save ``state`` so that ``path`` always holds either the old or the new complete checkpoint."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def local_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG streams: the host generator and, on a GPU, its own device's generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "device_type": device.type}
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    return state


def rank_rng_states(info: DistInfo, device: torch.device, gather: bool = True) -> dict[str, Any]:
    """Every rank's RNG streams, ``{"world_size": N, "ranks": [state of rank 0, ...]}``.

    With ``gather`` every rank must call this (a collective); without it only this rank's
    state is kept (for a checkpoint no run resumes from, e.g. a complete one).
    """
    own = local_rng_state(device)
    if not (gather and info.enabled):
        return {"world_size": info.world_size, "ranks": [own]}
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, own)
    return {"world_size": info.world_size, "ranks": states}


def restore_rng_states(saved: dict[str, Any], info: DistInfo, device: torch.device) -> str | None:
    """Restore this rank's RNG streams from ``saved``; a notice when the world size changed.

    A rank the checkpoint has no state for keeps its freshly seeded streams; a device state is
    restored only onto a device of the same type. Older checkpoints (one host state and every
    visible GPU's state, written by rank 0) are read as a one-rank checkpoint.
    """
    if "ranks" not in saved:  # older layout
        legacy = {"torch": saved["torch"], "device_type": "cuda" if saved.get("cuda") else "cpu"}
        if saved.get("cuda"):
            legacy["device"] = saved["cuda"][0]
        saved = {"world_size": 1, "ranks": [legacy]}
    ranks = saved["ranks"]
    if info.rank < len(ranks):
        own = ranks[info.rank]
        torch.set_rng_state(own["torch"])
        if device.type == "cuda" and own.get("device_type") == "cuda":
            torch.cuda.set_rng_state(own["device"], device)
    if saved["world_size"] == info.world_size:
        return None
    kept = min(saved["world_size"], info.world_size)
    return (
        f"note: the checkpoint was written by {saved['world_size']} rank(s), resuming on {info.world_size}: "
        f"the random streams of ranks 0..{kept - 1} are restored, the others start fresh "
        "(the run goes on, but is not bit-identical to an uninterrupted one)"
    )
