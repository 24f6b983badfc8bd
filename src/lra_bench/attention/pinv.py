"""Iterative Moore-Penrose pseudo-inverse (Newton-Schulz), as used by Nystromformer and Skyformer.

    Z <- 1/4 Z (13I - MZ (15I - MZ (7I - MZ)))

from one of two starts:

- ``per_matrix`` (the Nystromformer paper): Z0 = M^T / (||M||_1 ||M||_inf), per matrix;
- ``batch`` (the code behind the Nystromformer and Skyformer papers' tables): Z0 = M^T / c with
  c the largest ||M||_1 (max column sum) over the whole batch, one number for every matrix.
  It converges when the spectral norm of M is below about sqrt(2 c), as for the row-normalised
  kernel matrices those models invert (norm <= 1), not for any matrix.

``newton_schulz_pinv`` runs the iterations batched, as a custom autograd function that keeps
only each iterate Z and its product MZ for backward (two ``m x m`` per step instead of six);
``newton_schulz_reference`` is the plain loop, differentiated by autograd.
"""

from __future__ import annotations

from typing import Any

import torch

from lra_bench.attention.base import without_autocast

PINV_INITS = ("per_matrix", "batch")


def newton_schulz_start(m: torch.Tensor, init: str = "per_matrix") -> torch.Tensor:
    """Z0 for ``m [..., k, k]`` (differentiable, like the norms it divides by)."""
    if init not in PINV_INITS:
        raise ValueError(f"pinv_init: choose {' or '.join(PINV_INITS)}, got {init!r}")
    abs_m = m.abs()
    col = abs_m.sum(dim=-2).amax(dim=-1)  # ||M||_1 : max column sum
    if init == "batch":
        return m.mT / col.amax()
    row = abs_m.sum(dim=-1).amax(dim=-1)  # ||M||_inf : max row sum
    return m.mT / (col * row)[..., None, None]


def newton_schulz_reference(m: torch.Tensor, iters: int = 6, init: str = "per_matrix") -> torch.Tensor:
    """The iterations as written, differentiated by autograd (the reference for the fast path)."""
    z = newton_schulz_start(m, init)
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    for _ in range(iters):
        mz = m @ z
        z = 0.25 * z @ (13 * eye - mz @ (15 * eye - mz @ (7 * eye - mz)))
    return z


class _NewtonSchulz(torch.autograd.Function):
    """``iters`` steps from ``z0``; backward re-derives each step's inner factors from Z and MZ."""

    @staticmethod
    def forward(ctx: Any, m: torch.Tensor, z: torch.Tensor, iters: int) -> torch.Tensor:
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        kept: list[torch.Tensor] = []
        for _ in range(iters):
            mz = m @ z
            kept += [z, mz]
            z = 0.25 * z @ (13 * eye - mz @ (15 * eye - mz @ (7 * eye - mz)))
        if any(ctx.needs_input_grad[:2]):
            ctx.save_for_backward(m, *kept)
        return z

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        m, *kept = ctx.saved_tensors
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        dm = torch.zeros_like(m)
        for step in range(len(kept) // 2 - 1, -1, -1):
            z, y = kept[2 * step], kept[2 * step + 1]
            t1 = 7 * eye - y
            t3 = 15 * eye - y @ t1
            t5 = 13 * eye - y @ t3  # z_next = (z / 4) @ t5
            dt5 = 0.25 * (z.mT @ grad)
            dz = 0.25 * (grad @ t5.mT)
            minus_dt3 = y.mT @ dt5  # t5 = 13I - y t3
            dy = minus_dt3 @ t1.mT - dt5 @ t3.mT - y.mT @ minus_dt3  # t3 = 15I - y t1, t1 = 7I - y
            dm += dy @ z.mT  # y = m z
            grad = dz + m.mT @ dy
        return dm, grad, None


def newton_schulz_pinv(m: torch.Tensor, iters: int = 6, init: str = "per_matrix") -> torch.Tensor:
    """Approximate pinv of each ``[..., k, k]`` matrix with ``iters`` Newton-Schulz steps (see the module)."""
    with without_autocast(m):  # backward runs outside autocast: forward must match its dtypes
        return _NewtonSchulz.apply(m, newton_schulz_start(m, init), iters)
