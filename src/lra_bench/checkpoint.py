"""Atomic checkpoints: written to a temporary sibling and renamed, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lra_bench.io import atomic_write


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Save ``state`` so that ``path`` always holds either the old or the new complete checkpoint."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
