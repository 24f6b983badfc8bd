"""Exponential-kernel blocks times a thin matrix, built block by block and recomputed in backward.

Skyformer's Gaussian blocks k(Q, L), k(L, K) and Performer's feature maps phi(Q), phi(K) are
``n x m`` matrices of the form ``exp(E)`` with a low-rank exponent. Materialising them (and the
four or five temporaries autograd keeps around them) is what made these variants slower and
hungrier than exact attention. Here each block is built one tile at a time, in a single matmul
on augmented rows, used at once, and rebuilt in backward instead of being saved:

    x~ = [s x, -|s x|^2 / 2, 1]   (the long side, ``x [b, h, n, d]``, augmented per tile)
    E  = x~ y~^T - shift          (``y~ [.., m, d + 2]`` comes augmented by the caller)
    K  = exp(E) + eps             (padded rows of ``x`` zeroed when a mask is given)

so that ``y~ = [y, 1, -|y|^2 / 2]`` gives the Gaussian kernel ``exp(-|s x - y|^2 / 2)`` and
``y~ = [w, 0, 0]`` the projections ``exp(s x . w)``. ``shift`` is a constant (no gradient flows
through it): ``"row_max"`` (each row's own max, recomputed identically in backward) or a tensor
broadcastable to ``[b, h, n, 1]``. Only ``x``, ``y~``, the thin operand and the mask are saved:
O(n d + m d) memory for backward, whatever ``n``.

A tile is a part of the block of at most about ``CHUNK_ELEMENTS`` elements on a CPU, so that it
stays in cache (``tiles``): when a whole head's ``n x m`` fits, as many whole heads and batch
entries as fit (one batched call: at short lengths the cost of issuing a few small operations
per head would dominate); otherwise rows of one head at a time, each product one long matrix
product (a batch of short products over every head costs about a third more). On a GPU, rows of
every head at once. Either way a tile's memory is bounded, whatever ``b``, ``h`` and ``n``.

``kernel_apply(x, y~, p)`` returns ``K p`` (``[b, h, n, e]``) and ``kernel_reduce(x, y~, v)``
returns ``K^T v`` (``[b, h, m, e]``). ``recomputed(fn, *inputs)`` runs a deterministic ``fn``
without keeping its intermediates and runs it again in backward (``torch.utils.checkpoint``
without its first-call import of the compiler stack, seconds on a loaded machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from lra_bench.attention.base import backward_without_autocast, without_autocast

CHUNK_ELEMENTS = 1 << 18  # elements of one tile on a CPU (1 MB in fp32): stays in cache
CHUNK_ELEMENTS_GPU = (
    1 << 24
)  # on a GPU: large enough to fill it, small next to its memory (64 MB in fp32)
MIN_CHUNK = 64
PER_HEAD_DEVICES = ("cpu",)  # devices tiled one head at a time; the others get every head at once

Shift = torch.Tensor | str | None
Outputs = Any  # a tensor, or a tuple of tensors
Tile = tuple[slice | int, slice | int, slice]  # batch, heads and rows of a [b, h, n, .] tensor


def augment_rows(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``[.., c, d] -> [.., c, d + 2]``: ``[s x, -|s x|^2 / 2, 1]``."""
    out = x.new_empty(*x.shape[:-1], x.shape[-1] + 2)
    xs = torch.mul(x, scale, out=out[..., :-2])
    torch.sum(xs * xs, dim=-1, keepdim=True, out=out[..., -2:-1]).mul_(-0.5)
    out[..., -1] = 1
    return out


def augment_landmarks(y: torch.Tensor) -> torch.Tensor:
    """``[.., m, d] -> [.., m, d + 2]``: ``[y, 1, -|y|^2 / 2]``, so that
    ``x~ . y~ = -|s x - y|^2 / 2``."""
    half_sq = -0.5 * (y * y).sum(-1, keepdim=True)
    return torch.cat([y, torch.ones_like(half_sq), half_sq], dim=-1)


def tiles(
    x: torch.Tensor, m: int, elements: int | None = None, *, index_heads: bool = False
) -> Iterator[Tile]:
    """The tiles of the ``[b, h, n, m]`` block for ``x [b, h, n, d]`` (see the module), of at most
    about ``elements`` elements on a CPU (``CHUNK_ELEMENTS`` if None).

    ``index_heads``: a tile of one head's rows names its batch entry and head by index, so that
    it selects 2-D ``[rows, .]`` views (plain matrix products: cheaper to issue than batched
    ones, and accumulated in place by ``addmm_``)."""
    b, h, n = x.shape[:3]
    size = CHUNK_ELEMENTS if elements is None else elements
    every = slice(None)
    if x.device.type not in PER_HEAD_DEVICES:
        step = max(MIN_CHUNK, CHUNK_ELEMENTS_GPU // max(1, b * h * m))
        yield from ((every, every, slice(i, min(i + step, n))) for i in range(0, n, step))
        return
    if n * m <= size:  # whole heads fit a tile: as many heads and batch entries as fit
        heads = min(h, size // max(1, n * m))
        entries = max(1, size // max(1, h * n * m)) if heads == h else 1
        for bi in range(0, b, entries):
            for hi in range(0, h, heads):
                yield slice(bi, min(bi + entries, b)), slice(hi, min(hi + heads, h)), every
        return
    step = max(MIN_CHUNK, size // max(1, m))
    for bi in range(b):
        for hi in range(h):
            entry, head = (bi, hi) if index_heads else (slice(bi, bi + 1), slice(hi, hi + 1))
            for i in range(0, n, step):
                yield entry, head, slice(i, min(i + step, n))


def _part(t: Shift, tile: Tile, *, rows: bool) -> Shift:
    """The tile's part of a tensor broadcastable to ``[b, h, n or m, .]`` (size-1 axes kept whole);
    its rows too when ``rows``. Strings and None pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t[(None,) * (4 - t.dim())]
    index = tuple(
        part if size > 1 else slice(None) for part, size in zip(tile[:2], t.shape[:2], strict=True)
    )
    return t[(*index, tile[2])] if rows and t.shape[2] > 1 else t[index]


def _exp_block(x_aug: torch.Tensor, y_aug: torch.Tensor, shift: Shift) -> torch.Tensor:
    """``exp(x~ y~^T - shift)`` for one tile, built in place on the matmul's output."""
    e = x_aug @ y_aug.mT
    if isinstance(shift, str):
        e -= e.amax(dim=-1, keepdim=True)
    elif shift is not None:
        e -= shift
    return e.exp_()


def _tile_mask(mask: torch.Tensor | None, tile: Tile, dtype: torch.dtype) -> torch.Tensor | None:
    return None if mask is None else mask[tile[0], tile[2]][:, None, :, None].to(dtype)


def x_grad(
    dx_aug: torch.Tensor, x_aug: torch.Tensor, scale: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Gradient for ``x`` from that of ``x~ = [s x, -|s x|^2 / 2, 1]`` (into ``out`` if given);
    ``scale`` 1 when ``dx_aug`` carries it already."""
    d = x_aug.shape[-1] - 2
    grad = dx_aug[..., :d]
    found = torch.addcmul(grad, x_aug[..., :d], dx_aug[..., d : d + 1], value=-1, out=out)
    return found if scale == 1 else found.mul_(scale)


def _keep_settings(ctx: Any, shift: Shift, scale: float, eps: float) -> torch.Tensor | None:
    """Store the non-tensor settings on ``ctx``; returns the shift to save with the tensors
    (None unless a tensor)."""
    ctx.row_max, ctx.scale, ctx.eps = isinstance(shift, str), scale, eps
    return shift if isinstance(shift, torch.Tensor) else None


def _saved_shift(ctx: Any, tensor_shift: torch.Tensor | None) -> Shift:
    """The shift ``_keep_settings`` stored."""
    return "row_max" if ctx.row_max else tensor_shift


def _accumulator(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Zeros for the gradient of ``like [.., r, c]``, one per batch entry of ``grad`` (summed to
    ``like``'s shape later)."""
    return torch.zeros(*grad.shape[:-2], *like.shape[-2:], dtype=like.dtype, device=like.device)


def _y_grad_sum(dy: torch.Tensor, y_aug: torch.Tensor) -> torch.Tensor:
    return dy.sum_to_size(y_aug.shape) if dy.shape != y_aug.shape else dy


class _KernelApply(torch.autograd.Function):
    """``(exp(x~ y~^T - shift) + eps) p``, tile by tile."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y_aug: torch.Tensor,
        p: torch.Tensor,
        shift: Shift,
        scale: float,
        eps: float,
    ) -> torch.Tensor:
        out = x.new_empty(
            *torch.broadcast_shapes(x.shape[:-2], p.shape[:-2]), x.shape[-2], p.shape[-1]
        )
        for tile in tiles(x, y_aug.shape[-2]):
            k = _exp_block(
                augment_rows(x[tile], scale),
                _part(y_aug, tile, rows=False),
                _part(shift, tile, rows=True),
            )
            if eps:
                k += eps
            out[tile] = k @ _part(p, tile, rows=False)
        ctx.save_for_backward(x, y_aug, p, _keep_settings(ctx, shift, scale, eps))
        return out

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y_aug, p, tensor_shift = ctx.saved_tensors
        shift = _saved_shift(ctx, tensor_shift)
        need_x, need_y, need_p = ctx.needs_input_grad[:3]
        dx = torch.empty_like(x) if need_x else None
        dy = _accumulator(grad, y_aug) if need_y else None
        dp = _accumulator(grad, p) if need_p else None
        for tile in tiles(x, y_aug.shape[-2]):
            x_aug, y_part = augment_rows(x[tile], ctx.scale), _part(y_aug, tile, rows=False)
            k = _exp_block(x_aug, y_part, _part(shift, tile, rows=True))
            g = grad[tile]
            if dp is not None:
                dp[tile[:2]] += k.mT @ g
                if ctx.eps:
                    dp[tile[:2]] += ctx.eps * g.sum(dim=-2, keepdim=True)
            de = (g @ _part(p, tile, rows=False).mT).mul_(
                k
            )  # d/dE of exp(E) + eps: the exponential itself
            if dx is not None:
                dx[tile] = x_grad(de @ y_part, x_aug, ctx.scale)
            if dy is not None:
                dy[tile[:2]] += de.mT @ x_aug
        dy = None if dy is None else _y_grad_sum(dy, y_aug)
        dp = None if dp is None else _y_grad_sum(dp, p)
        return dx, dy, dp, None, None, None


class _KernelReduce(torch.autograd.Function):
    """``(mask * (exp(x~ y~^T - shift) + eps))^T v``, tile by tile."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y_aug: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        shift: Shift,
        scale: float,
        eps: float,
    ) -> torch.Tensor:
        out = x.new_zeros(
            *torch.broadcast_shapes(x.shape[:-2], y_aug.shape[:-2]), y_aug.shape[-2], v.shape[-1]
        )
        for tile in tiles(x, y_aug.shape[-2]):
            k = _kept(
                augment_rows(x[tile], scale),
                _part(y_aug, tile, rows=False),
                mask,
                _part(shift, tile, rows=True),
                eps,
                tile,
            )[0]
            out[tile[:2]] += k.mT @ v[tile]
        ctx.save_for_backward(x, y_aug, v, mask, _keep_settings(ctx, shift, scale, eps))
        return out

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y_aug, v, mask, tensor_shift = ctx.saved_tensors
        shift = _saved_shift(ctx, tensor_shift)
        need_x, need_y, need_v = ctx.needs_input_grad[:3]
        dx = torch.empty_like(x) if need_x else None
        dv = (
            torch.empty(*grad.shape[:-2], *v.shape[-2:], dtype=v.dtype, device=v.device)
            if need_v
            else None
        )
        dy = _accumulator(grad, y_aug) if need_y else None
        for tile in tiles(x, y_aug.shape[-2]):
            x_aug, y_part, g = (
                augment_rows(x[tile], ctx.scale),
                _part(y_aug, tile, rows=False),
                grad[tile[:2]],
            )
            k, e = _kept(x_aug, y_part, mask, _part(shift, tile, rows=True), ctx.eps, tile)
            if dv is not None:
                dv[tile] = k @ g
            de = (v[tile] @ g.mT).mul_(e)  # e: the exponential, zero on padded rows
            if dx is not None:
                dx[tile] = x_grad(de @ y_part, x_aug, ctx.scale)
            if dy is not None:
                dy[tile[:2]] += de.mT @ x_aug
        dv = None if dv is None else dv.sum_to_size(v.shape)
        dy = None if dy is None else _y_grad_sum(dy, y_aug)
        return dx, dy, dv, None, None, None, None


def _kept(
    x_aug: torch.Tensor,
    y_aug: torch.Tensor,
    mask: torch.Tensor | None,
    shift: Shift,
    eps: float,
    tile: Tile,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile of the kernel as used (``mask (exp + eps)``) and its masked exponential part,
    from the tile's ``x~``."""
    e = _exp_block(x_aug, y_aug, shift)
    keep = _tile_mask(mask, tile, e.dtype)
    if keep is not None:
        e.mul_(keep)
    if not eps:
        return e, e
    k = e + eps
    return (k if keep is None else k.mul_(keep)), e


def kernel_apply(
    x: torch.Tensor,
    y_aug: torch.Tensor,
    p: torch.Tensor,
    *,
    scale: float,
    shift: Shift = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """``(exp(x~ y~^T - shift) + eps) @ p``: ``x [b, h, n, d]``, ``y~ [.., m, d + 2]``,
    ``p [.., m, e]`` -> ``[b, h, n, e]``."""
    with without_autocast(x):
        return _KernelApply.apply(x, y_aug, p, shift, scale, eps)


def kernel_reduce(
    x: torch.Tensor,
    y_aug: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float,
    shift: Shift = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """``(mask (exp(x~ y~^T - shift) + eps))^T @ v``: ``v [b, h, n, e]``, ``mask [b, n]``
    -> ``[b, h, m, e]``."""
    with without_autocast(x):
        return _KernelReduce.apply(x, y_aug, v, mask, shift, scale, eps)


@torch.no_grad()
def row_max(x: torch.Tensor, y_aug: torch.Tensor, *, scale: float) -> torch.Tensor:
    """``max_j x~_i . y~_j`` per row, ``[b, h, n, 1]``, tile by tile (no gradient: it only
    stabilises)."""
    out = x.new_empty(*torch.broadcast_shapes(x.shape[:-2], y_aug.shape[:-2]), x.shape[-2], 1)
    for tile in tiles(x, y_aug.shape[-2]):
        out[tile] = (augment_rows(x[tile], scale) @ _part(y_aug, tile, rows=False).mT).amax(
            dim=-1, keepdim=True
        )
    return out


class _Recomputed(torch.autograd.Function):
    """``fn(*inputs)`` keeping only the inputs; backward runs ``fn`` again under autograd."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., Outputs], *inputs: torch.Tensor) -> Outputs:
        ctx.fn = fn
        ctx.save_for_backward(*inputs)
        ctx.set_materialize_grads(False)  # outputs nothing downstream used get None, not zeros
        return fn(*inputs)

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        inputs = [
            x.detach().requires_grad_(need)
            for x, need in zip(ctx.saved_tensors, ctx.needs_input_grad[1:], strict=True)
        ]
        wanted = [x for x in inputs if x.requires_grad]
        with torch.enable_grad():
            outputs = ctx.fn(*inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            used = [
                (out, grad)
                for out, grad in zip(outputs, grads, strict=True)
                if grad is not None and out.requires_grad
            ]
            found: Any = [None] * len(wanted)
            if wanted and used:
                found = torch.autograd.grad(
                    [out for out, _ in used], wanted, [grad for _, grad in used], allow_unused=True
                )
        by_input = iter(found)
        return (None, *(next(by_input) if x.requires_grad else None for x in inputs))


def recomputed(fn: Callable[..., Outputs], *inputs: torch.Tensor) -> Outputs:
    """``fn(*inputs)`` (a tensor or a tuple of tensors), its intermediates rebuilt in backward
    instead of kept (``fn`` must be deterministic)."""
    if not torch.is_grad_enabled() or not any(x.requires_grad for x in inputs):
        return fn(*inputs)
    with without_autocast(inputs[0]):
        return _Recomputed.apply(fn, *inputs)
