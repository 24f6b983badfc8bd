"""Exact softmax attention with attention dropout, a block of query rows at a time.

On a CPU, ``scaled_dot_product_attention`` with ``dropout_p > 0`` falls back to its math kernel,
which materialises the ``b x h x n x n`` weights (and keeps them for backward): gigabytes per layer
at LRA lengths. Here the weights of ``rows`` query rows at a time are built, dropped and used at
once, and rebuilt in backward from q, k, v and the key bias; the dropout masks come from a
generator seeded by one draw from torch's global generator, so backward draws the very same
masks again. What a call keeps for backward is q, k, v, the bias and the seed; its temporaries
are ``O(rows x n)`` per head. Outputs and gradients are those of SDPA's math kernel with the same
mask: ``softmax(q k^T / sqrt d + bias) * keep / (1 - p) @ v``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lra_bench.attention.base import backward_without_autocast, without_autocast
from lra_bench.dropout import cheap
from lra_bench.dropout import keep_mask as dropout_keep_mask

BLOCK_ELEMENTS = 1 << 21  # elements of one block of weights over every head (8 MB in fp32)
MIN_ROWS = 16


def block_rows(b: int, h: int, n_q: int, n_k: int) -> int:
    """Query rows per block: about ``BLOCK_ELEMENTS`` weights over every head at once."""
    return min(n_q, max(MIN_ROWS, BLOCK_ELEMENTS // max(1, b * h * n_k)))


def keep_mask(
    generator: torch.Generator, shape: tuple[int, ...], p: float, rows: slice, like: torch.Tensor
) -> torch.Tensor:
    """The kept weights (True) of the query rows ``rows``: each kept with probability ``1 - p``;
    on a CPU drawn as the model's dropout draws its masks (``lra_bench.dropout``)."""
    del rows  # the same stream, block after block, in forward and backward
    if cheap(like, p):
        return dropout_keep_mask(shape, p, generator=generator)
    draw = torch.empty(shape, dtype=like.dtype, device=like.device)
    return draw.bernoulli_(1 - p, generator=generator).bool()


def _weights(
    q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    scores = (q @ k.mT).mul_(scale)
    if bias is not None:
        scores += bias
    return torch.softmax(scores, dim=-1)


def _blocks(n: int, rows: int) -> list[slice]:
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class _DroppedSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        p: float,
        seed: int,
    ) -> torch.Tensor:
        b, h, n, d = q.shape
        scale, rows = 1 / math.sqrt(d), block_rows(b, h, n, k.shape[-2])
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        gen = _generator(seed, q.device)
        for r in _blocks(n, rows):
            a = _weights(q[:, :, r], k, bias, scale)
            a.mul_(keep_mask(gen, a.shape, p, r, a)).mul_(1 / (1 - p))
            out[:, :, r] = a @ v
        ctx.save_for_backward(q, k, v, bias)
        ctx.p, ctx.seed, ctx.scale, ctx.rows = p, seed, scale, rows
        return out

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, bias = ctx.saved_tensors
        p, scale = ctx.p, ctx.scale
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        gen = _generator(ctx.seed, q.device)
        for r in _blocks(q.shape[-2], ctx.rows):
            a = _weights(q[:, :, r], k, bias, scale)
            keep = keep_mask(gen, a.shape, p, r, a).to(a.dtype).mul_(1 / (1 - p))
            g = grad[:, :, r]
            dv += (a * keep).mT @ g
            da = (g @ v.mT).mul_(keep)  # gradient of the weights before dropout
            ds = a.mul_(da - (da * a).sum(dim=-1, keepdim=True))  # softmax's backward, in place
            dq[:, :, r] = (ds @ k).mul_(scale)
            dk += (ds.mT @ q[:, :, r]).mul_(scale)
        return dq, dk, dv, None, None, None


def dropped_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    p: float,
) -> torch.Tensor:
    """``dropout(softmax(q k^T / sqrt d + bias), p) @ v`` block by block (see the module);
    ``bias`` broadcasts to ``[b, h, n, n]`` (e.g. ``[b, 1, 1, n]`` for padded keys)."""
    seed = int(torch.randint(0, 2**62, (), device="cpu"))
    with without_autocast(q):
        return _DroppedSoftmax.apply(q, k, v, bias, p, seed)
