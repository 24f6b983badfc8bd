"""Random draws of the sampling variants, made on the device of the tensors they act on.

A draw made on the host and copied to the GPU measures host RNG and a stream-synchronising
copy, not the method; so every draw uses a generator that lives on the tensors' device.

``DeviceGenerators`` holds a module's training generators, one per device type, all seeded
from the same seed; their states are saved and restored (a state for a device type not used
yet is kept until that device's generator is created). Eval draws use ``seeded_generator``:
a fresh stream from a fixed seed on every call. On the CPU the draws are exactly those of a
plain ``torch.Generator`` seeded the same way.
"""

from __future__ import annotations

import torch


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` started from ``seed`` (no host-device synchronisation)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


class DeviceGenerators:
    """Training generators of one module, one per device type, each started from ``seed``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generators: dict[str, torch.Generator] = {}
        self.pending: dict[str, torch.Tensor] = {}  # restored states of devices not used yet

    def get(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The running generator for ``device`` (created on first use, from a restored state if
        any)."""
        device = torch.device(device)
        g = self.generators.get(device.type)
        if g is None:
            g = seeded_generator(self.seed, device)
            if device.type in self.pending:
                g.set_state(self.pending.pop(device.type))
            self.generators[device.type] = g
        return g

    def state(self) -> dict[str, torch.Tensor]:
        """Every device's generator state (host byte tensors), keyed by device type."""
        return {**self.pending, **{kind: g.get_state() for kind, g in self.generators.items()}}

    def load(self, state: dict[str, torch.Tensor] | torch.Tensor) -> None:
        """Restore ``state`` (a bare tensor is a CPU generator's state, as older checkpoints
        hold)."""
        states = {"cpu": state} if isinstance(state, torch.Tensor) else dict(state)
        for kind, value in states.items():
            g = self.generators.get(kind)
            if g is None:
                self.pending[kind] = value
            else:
                g.set_state(value)


def uniform_indices(
    lengths: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Indices drawn uniformly with replacement from ``[0, lengths[b])``, shape ``[batch, *shape]``.

    Uniform numbers are drawn with a fixed shape on the generator's device, so the same
    generator state gives the same indices whatever the padding (the draw is padding-invariant).
    """
    u = torch.rand(
        (lengths.shape[0], *shape),
        generator=generator,
        dtype=torch.float64,
        device=generator.device,
    )
    u = u.to(lengths.device)
    lens = lengths.to(torch.float64).clamp(min=1).view(-1, *([1] * len(shape)))
    return torch.minimum((u * lens).long(), lens.long() - 1)
