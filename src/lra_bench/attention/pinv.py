"""Iterative Moore-Penrose pseudo-inverse (Newton-Schulz), as used by Nystromformer and Skyformer."""

from __future__ import annotations

import torch


def newton_schulz_pinv(m: torch.Tensor, iters: int = 6, per_matrix_init: bool = True) -> torch.Tensor:
    """Approximate pinv of each ``[..., k, k]`` matrix with ``iters`` steps of
    Z <- 1/4 Z (13I - MZ (15I - MZ (7I - MZ))), starting from Z0 = M^T / (||M||_1 ||M||_inf).

    ``per_matrix_init`` takes the two norms per matrix; ``False`` takes one max over the
    whole batch, as the peer code does.
    """
    abs_m = m.abs()
    col = abs_m.sum(dim=-2).amax(dim=-1)  # ||M||_1 : max column sum
    row = abs_m.sum(dim=-1).amax(dim=-1)  # ||M||_inf : max row sum
    if not per_matrix_init:
        col, row = col.amax(), row.amax()
        scale = col * row
    else:
        scale = (col * row)[..., None, None]
    z = m.transpose(-1, -2) / scale
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    for _ in range(iters):
        mz = m @ z
        z = 0.25 * z @ (13 * eye - mz @ (15 * eye - mz @ (7 * eye - mz)))
    return z
