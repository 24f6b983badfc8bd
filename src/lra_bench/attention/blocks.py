"""Helpers shared by the block-structured variants (local, longformer, sparse, sinkhorn).

Masked keys get the finite score ``MASKED`` (or the lowest that fits fp16) rather than -inf: next to
any visible key its
exponential underflows to exactly 0, and a row with no visible key (a padded query of an
all-padding sequence) stays finite instead of producing NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lra_bench.attention.base import hidden_score

MASKED = -1e9  # score of a hidden key


def valid_keys(mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """The key mask ``[batch, n]`` (True = real), all True when ``mask`` is None."""
    if mask is None:
        return torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device)
    return mask


def pad_seq(x: torch.Tensor, n_c: int, dim: int = 2) -> torch.Tensor:
    """``x`` zero-padded (False for bool) at the end of ``dim`` to length ``n_c``."""
    extra = n_c - x.shape[dim]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=False if x.dtype == torch.bool else 0.0)


def hide(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``scores`` with every entry that is not ``allowed`` (broadcast) replaced by ``MASKED``.

    Replaced, not offset: a row with no allowed key is then exactly uniform with a zero
    derivative, instead of depending on scores rounded at the scale of 1e9.
    """
    return scores.masked_fill(~allowed, hidden_score(scores.dtype, MASKED))


def blocked(x: torch.Tensor, block: int) -> torch.Tensor:
    """``[b, h, n_c, d]`` -> ``[b, h, n_c / block, block, d]`` (a view; n_c a multiple of block)."""
    b, h, n_c, d = x.shape
    return x.view(b, h, n_c // block, block, d)
