"""The model's dropout: ``nn.Dropout``'s distribution with a cheaper mask on a CPU.

On a CPU ``nn.Dropout`` draws its mask with ``bernoulli_`` (about 8 ns per element on one core).
Here each element gets one uniform draw instead, 32 random bits from NumPy's PCG64, and is kept
where the bits are at least ``ceil(p * 2**32)``: each element is kept with probability ``1 - p``
(to within ``2**-32``), independently, at about 0.4x the forward and backward time
(README.md, Throughput). The PCG64 stream of a call is seeded by one 64-bit draw from torch's
generator, so ``torch.manual_seed`` and a checkpoint's saved torch random state reproduce the
masks; they are not the masks ``nn.Dropout`` would draw. Kept values are ``x * (1 / (1 - p))``,
bit for bit ``nn.Dropout``'s, and the gradient is the same scaled mask times the incoming one.
Elsewhere (a GPU, whose fused dropout kernel is one pass already; other dtypes; ``p`` of 0 or 1;
in place; under ``torch.compile``) it is ``nn.Dropout`` itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BITS = 32
CHUNK = 1 << 16  # elements drawn at a time (even: each takes whole 64-bit PCG64 outputs)
MASK_DTYPES = (torch.float32, torch.float64)


def threshold(p: float) -> int:
    """The smallest 32-bit value kept: ``P(bits >= threshold) = 1 - p`` to within ``2**-32``."""
    return math.ceil(p * 2**BITS)


def keep_mask(
    shape: tuple[int, ...] | torch.Size,
    p: float,
    dtype: torch.dtype = torch.bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A CPU tensor of ``shape``: 1 (True) with probability ``1 - p`` per element, independently,
    else 0; one draw from ``generator`` (torch's default one if None) seeds the call's bits."""
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    bit_generator, kept_from = np.random.PCG64(seed), np.uint32(threshold(p))
    keep = torch.empty(shape, dtype=dtype)
    flat = keep.numpy().reshape(-1)
    for start in range(0, flat.size, CHUNK):  # bounded scratch; the same bits as one draw
        part = flat[start : start + CHUNK]
        bits = bit_generator.random_raw((part.size + 1) // 2).view(np.uint32)[: part.size]
        np.greater_equal(bits, kept_from, out=part, casting="unsafe")
    return keep


def cheap(x: torch.Tensor, p: float) -> bool:
    """Whether ``keep_mask`` serves ``x``: a CPU tensor in float32/float64, ``0 < p < 1`` with
    ``p`` above ``1 - 2**-32`` excluded, outside ``torch.compile`` (which has its own draws)."""
    return (
        x.device.type == "cpu"
        and x.dtype in MASK_DTYPES
        and 0.0 < p < 1.0
        and threshold(p) < 2**BITS
        and not torch.compiler.is_compiling()
    )


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution; on a CPU its mask is ``keep_mask``'s."""
    if not training or p == 0.0:
        return x
    if not cheap(x, p):
        return F.dropout(x, p, training)
    keep = keep_mask(x.shape, p, x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep  # autograd keeps only ``keep``: the gradient is ``keep`` times the incoming


class Dropout(nn.Dropout):
    """A drop-in ``nn.Dropout`` (same ``p``, identity in eval mode) drawing masks by ``dropout``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(input, self.p, self.training, inplace=True)
        return dropout(input, self.p, self.training)
