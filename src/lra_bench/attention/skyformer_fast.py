"""Skyformer's attention as one autograd function: both Gaussian blocks tile by tile, nothing n x m
kept, the gradients written by hand.

    C = k(L, K) V          (padded keys dropped)     block B, ``[b, h, m, d]``
    P = small(L, C)        (W, M, the pseudo-inverse: m x m work, ``SmallPart``)
    out = k(Q, L) P                                   block A

Forward builds each tile of a block once and uses it at once: one matmul on the augmented rows
``x~ = [s x, -|s x|^2 / 2, 1]`` (``_Rows``) and an exponential, taken as ``exp2`` of base-2
exponents (the landmarks carry the factor log2 e). Backward rebuilds it and takes from it every
gradient it carries: for block A dP, dQ and dL, for block B dV, dK and dL. The landmarks' gradient
is added into dQ and dK in place (``index_add_``), not through a zero tensor of the inputs' size.
What is kept for backward: the landmark indices, P and what the small part's backward needs
(O(m d + m^2) per head: on a CPU its eigenvectors and eigenvalues, ``skyformer_small``; elsewhere
its autograd graph, ``GraphSmall``). A tile holds a quarter of q's elements on a CPU, within
[``MIN_TILE``, ``MAX_TILE``] (``_tile_elements``), every head's rows at once elsewhere
(``chunked.tiles``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from lra_bench.attention import chunked
from lra_bench.attention.base import backward_without_autocast, without_autocast
from lra_bench.attention.chunked import augment_landmarks

MIN_TILE, MAX_TILE = 1 << 16, 1 << 18  # elements of one n x m tile on a CPU (256 KB to 1 MB)

SMALL_ELEMENTS = 1 << 16  # elements of the m x m matrices of one group of the small part, at least

LOG2E = math.log2(math.e)  # exp(a) = 2^(a log2 e): exp2 costs 0.4-0.6x exp on a CPU


def _small_group_elements(q: torch.Tensor) -> int:
    """Elements of the m x m matrices in one group of the small part: a quarter of q's, at least
    ``SMALL_ELEMENTS``; its temporaries then stay below what the blocks' tiles and exact attention
    hold, and from n = 2048 at b 4, h 2, d 32 every batch entry is in one group (one batched
    eigendecomposition instead of several)."""
    return max(SMALL_ELEMENTS, q.numel() // 4)


def _tile_elements(x: torch.Tensor) -> int:
    """A quarter of the elements of ``x``, within [MIN_TILE, MAX_TILE]: a tile's few temporaries
    then grow with what exact attention holds for the same inputs (the whole backward stays below
    it from n = 1024 at b 4, h 2, d 32), and are few enough at short lengths that issuing their
    operations does not dominate (tiles of an eighth took 5-7% longer at n = 2048 and 4096)."""
    size = min(MAX_TILE, max(MIN_TILE, x.numel() // 4))
    return min(size, chunked.CHUNK_ELEMENTS)


Head = tuple[slice | int, slice | int]  # the batch entries and heads of a tile
Rows = tuple[int, int]  # the first row of a tile and its number of rows


def _by_head(tiles: list[chunked.Tile], n: int) -> list[tuple[Head, list[Rows]]]:
    """The tiles grouped by head (or group of whole heads), each with its row ranges."""
    grouped: list[tuple[Head, list[Rows]]] = []
    for entry, head, rows in tiles:
        first, stop, _ = rows.indices(n)
        if not grouped or grouped[-1][0] != (entry, head):
            grouped.append(((entry, head), []))
        grouped[-1][1].append((first, stop - first))
    return grouped


def _part(t: torch.Tensor, rows: Rows) -> torch.Tensor:
    """The rows of ``t [.., n, .]`` a tile covers (a view)."""
    return t.narrow(-2, *rows)


class _Rows:
    """The augmented rows ``[s x, -|s x|^2 / 2, 1]`` of each tile of ``x`` and the tile's kernel
    block, written into buffers reused from tile to tile (fresh large tensors cost page faults).
    Each tile's norms come from its rows in the buffer: a norm over the whole of ``x`` read it a
    second time, and in the model's layout (strided views of one projection) took 2-5x as long.

    ``heads`` lists the tiles by head; ``at(head)`` takes that head's views once, so that a tile
    costs a few narrowed views of them (on a CPU a tile is one head's rows: 2-D views, plain
    matrix products)."""

    def __init__(self, x, lm_log2, scale: float, mask: torch.Tensor | None = None) -> None:
        self.x, self.scale, d = x, scale, x.shape[-1]
        self.lm_log2 = lm_log2
        self.keep = None if mask is None else mask.to(x.dtype)  # [b, n]: 1 on real tokens
        elements = _tile_elements(x)
        tiles = chunked.tiles(x, lm_log2.shape[-2], elements=elements, index_heads=True)
        self.heads = _by_head(list(tiles), x.shape[-2])
        (head, (rows, *_)), *_ = self.heads
        shape = _part(x[head], rows).shape[:-1]
        self.x_buf = x.new_empty(*shape, d + 2)
        self.x_buf[..., -1] = 1
        self.e_buf = x.new_empty(*shape, lm_log2.shape[-2])
        self.de_buf = torch.empty_like(self.e_buf)

    def at(self, head: Head) -> None:
        """Takes ``head``'s views for the tiles that follow, and the buffers' part that fits them
        (a last group of whole heads may hold fewer batch entries than the first)."""
        self.x_head = self.x[head]
        lead = tuple(slice(0, size) for size in self.x_head.shape[:-2])
        self.x_aug_buf, self.e_head, self.de_head = (
            buf[lead] for buf in (self.x_buf, self.e_buf, self.de_buf)
        )
        d = self.x.shape[-1]
        self.x_part, self.half_sq_part = self.x_aug_buf[..., :d], self.x_aug_buf[..., d : d + 1]
        self.lm_t = self.lm_log2[head].mT
        self.keep_head = None
        if self.keep is not None:
            keep = self.keep[head[0]].unsqueeze(-1)  # [n, 1] or [entries, n, 1]
            self.keep_head = keep if isinstance(head[0], int) else keep.unsqueeze(1)

    def augmented(self, rows: Rows) -> torch.Tensor:
        scaled = torch.mul(
            _part(self.x_head, rows), self.scale, out=_part(self.x_part, (0, rows[1]))
        )
        half_sq = _part(self.half_sq_part, (0, rows[1]))
        torch.linalg.vector_norm(scaled, dim=-1, keepdim=True, out=half_sq)
        half_sq.square_().mul_(-0.5)  # -|s x|^2 / 2
        return _part(self.x_aug_buf, (0, rows[1]))

    def block(self, x_aug: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``exp(x~ L~^T)`` (the Gaussian kernel) as ``2^(x~ (log2 e L~)^T)``, rows of padded keys
        zeroed."""
        e = torch.matmul(x_aug, self.lm_t, out=_part(self.e_head, (0, rows[1])))
        e.exp2_()
        return e if self.keep_head is None else e.mul_(_part(self.keep_head, rows))

    def times(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` into the second tile buffer."""
        return torch.matmul(a, b, out=_part(self.de_head, (0, a.shape[-2])))


def _add_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b``, in place in one call for a tile of one head's rows (2-D)."""
    if acc.dim() == 2:
        acc.addmm_(a, b)
    else:
        acc += a @ b


def _x_grad(de: torch.Tensor, lm: torch.Tensor, x_aug: torch.Tensor, scale: float, out):
    """x's gradient through ``E = x~ L~^T``, ``x~ = [s x, -|s x|^2 / 2, 1]`` (the tile's
    ``x_aug``), from its ``dE``, into ``out``: ``s dE L - s (s x) rowsum(dE)``. A product of width
    d and a row sum instead of one of width d + 2 and a pass over its strided columns; s x is
    read from the tile's buffer, in cache, not from x (strided in the model's layout)."""
    if de.dim() == 2:
        out.addmm_(de, lm, beta=0, alpha=scale)
    else:
        torch.matmul(de, lm, out=out).mul_(scale)
    scaled_x = x_aug[..., : lm.shape[-1]]
    return out.addcmul_(scaled_x, de.sum(-1, keepdim=True), value=-scale)


def _landmarks(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, from_k: torch.Tensor, scale: float
) -> torch.Tensor:
    """``scale [q; k][idx]``: ``[b, h, m, d]``."""
    b, h = q.shape[:2]
    at = (
        torch.arange(b, device=q.device).view(-1, 1, 1),
        torch.arange(h, device=q.device).view(1, -1, 1),
        rows,
    )
    return torch.where(from_k.unsqueeze(-1), k[at], q[at]) * scale


def _base2_landmarks(lm: torch.Tensor) -> torch.Tensor:
    """``log2 e [L, 1, -|L|^2 / 2]``: the augmented landmarks with the blocks' exponents in base 2,
    for ``exp2``."""
    return augment_landmarks(lm).mul_(LOG2E)


def _reduce(k, lm_log2, v, mask, scale: float) -> torch.Tensor:
    """C = k(L, K) V over real keys, tile by tile, summed as C^T += V^T e (a quarter faster than
    e^T V on a CPU: the long axis is the product's inner one in both operands' natural layout)."""
    c_t = v.new_zeros(*v.shape[:2], v.shape[-1], lm_log2.shape[-2])
    kr = _Rows(k, lm_log2, scale, mask)
    for head, row_ranges in kr.heads:
        kr.at(head)
        v_head, c_head = v[head], c_t[head]
        for rows in row_ranges:
            e = kr.block(kr.augmented(rows), rows)
            _add_product(c_head, _part(v_head, rows).mT, e)
    return c_t.mT


def _apply(q, lm_log2, p, scale: float) -> torch.Tensor:
    """k(Q, L) P, tile by tile."""
    out = q.new_empty(*q.shape[:-1], p.shape[-1])
    qr = _Rows(q, lm_log2, scale)
    for head, row_ranges in qr.heads:
        qr.at(head)
        p_head, out_head = p[head], out[head]
        for rows in row_ranges:
            torch.matmul(qr.block(qr.augmented(rows), rows), p_head, out=_part(out_head, rows))
    return out


class SmallPart(Protocol):
    """The m x m part, ``P = small(L, C)``, one group of batch entries at a time."""

    def forward(
        self, group: int, landmarks: torch.Tensor, c: torch.Tensor, grad: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The group's P and the tensors its backward needs (saved for backward)."""
        ...

    def backward(
        self, group: int, kept: tuple[torch.Tensor, ...], grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """dL and dC of the group for dP = ``grad``."""
        ...


class GraphSmall:
    """A differentiable ``fn(L, C) -> P`` as a ``SmallPart``: each group's autograd graph is
    kept, and backward goes through one group's m x m temporaries at a time."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.fn, self.graphs = fn, {}

    def forward(self, group, landmarks, c, grad):
        with torch.enable_grad():
            lm_in = landmarks.detach().requires_grad_(grad)
            c_in = c.detach().requires_grad_(grad)
            p = self.fn(lm_in, c_in)
        self.graphs[group] = (lm_in, c_in, p)
        return p.detach(), ()

    def backward(self, group, kept, grad):
        lm_in, c_in, p = self.graphs.pop(group)
        found = torch.autograd.grad(p, (lm_in, c_in), grad)
        return found[0], found[1]


class _Skyformer(torch.autograd.Function):
    """``out = k(Q, L) small(L, k(L, K) V)`` (see the module)."""

    @staticmethod
    def forward(ctx: Any, q, k, v, rows, from_k, mask, scale: float, small: SmallPart, per: int):
        lm = _landmarks(q, k, rows, from_k, scale)
        lm_log2 = _base2_landmarks(lm)
        c = _reduce(k, lm_log2, v, mask, scale)
        grad = any(ctx.needs_input_grad[:3])
        parts = [
            small.forward(group, lm[start : start + per], c[start : start + per], grad)
            for group, start in enumerate(range(0, len(lm), per))
        ]
        p = parts[0][0] if len(parts) == 1 else torch.cat([part for part, _ in parts])
        out = _apply(q, lm_log2, p, scale)
        ctx.scale, ctx.per, ctx.small = scale, per, small
        ctx.kept = [len(kept) for _, kept in parts]
        ctx.save_for_backward(
            q, k, v, rows, from_k, mask, lm, p, *(t for _, kept in parts for t in kept)
        )
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor):
        q, k, v, rows, from_k, mask, lm, p, *kept = ctx.saved_tensors
        lm_log2 = _base2_landmarks(lm)
        dq, dlm_aug_t, dp = _apply_backward(q, lm, lm_log2, p, grad.contiguous(), ctx.scale)
        d = lm.shape[-1]
        dlm_t, dc = dlm_aug_t[..., :d, :], torch.empty_like(p)
        for group, start in enumerate(range(0, len(lm), ctx.per)):
            part, size = slice(start, start + ctx.per), ctx.kept[group]
            group_kept, kept = tuple(kept[:size]), kept[size:]
            dl, dc[part] = ctx.small.backward(group, group_kept, dp[part])
            dlm_t[part] += dl.mT
        del dp, dl  # freed before block B's tiles
        dk, dv = _reduce_backward(k, lm, lm_log2, v, mask, dc, dlm_aug_t, ctx.scale)
        dlm = dlm_t.mT - lm * dlm_aug_t[..., d + 1, :].unsqueeze(-1)
        _add_landmark_grad(dq, dk, dlm.mul_(ctx.scale), rows, from_k)
        return dq, dk, dv, None, None, None, None, None, None


def _apply_backward(q, lm, lm_log2, p, grad, scale: float):
    """dQ (without the landmarks' part), dL~^T and dP of block A's ``out = k(Q, L) P``.

    The m-sided gradients are summed transposed (dP^T += G^T e, dL~^T += x~^T dE), the faster
    products (see ``_reduce``)."""
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dlm_aug_t = lm.new_zeros(*lm_log2.shape[:2], lm_log2.shape[-1], lm_log2.shape[-2])
    dp_t = p.new_zeros(*p.shape[:2], p.shape[-1], p.shape[-2])
    qr = _Rows(q, lm_log2, scale)
    for head, row_ranges in qr.heads:
        qr.at(head)
        grad_h, dq_h, lm_h, p_t = grad[head], dq[head], lm[head], p[head].mT
        dp_h, dlm_h = dp_t[head], dlm_aug_t[head]
        for rows in row_ranges:
            x_aug, g = qr.augmented(rows), _part(grad_h, rows)
            e = qr.block(x_aug, rows)
            _add_product(dp_h, g.mT, e)
            de = qr.times(g, p_t).mul_(e)
            _x_grad(de, lm_h, x_aug, scale, _part(dq_h, rows))
            _add_product(dlm_h, x_aug.mT, de)
    return dq, dlm_aug_t, dp_t.mT


def _reduce_backward(k, lm, lm_log2, v, mask, dc, dlm_aug_t, scale: float):
    """dK (without the landmarks' part) and dV of block B's ``C = k(L, K) V``; adds its dL~^T."""
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    kr = _Rows(k, lm_log2, scale, mask)
    for head, row_ranges in kr.heads:
        kr.at(head)
        v_h, dk_h, dv_h, lm_h, g = v[head], dk[head], dv[head], lm[head], dc[head]
        g_t, dlm_h = g.mT, dlm_aug_t[head]
        for rows in row_ranges:
            x_aug = kr.augmented(rows)
            e = kr.block(x_aug, rows)
            torch.matmul(e, g, out=_part(dv_h, rows))
            de = kr.times(_part(v_h, rows), g_t).mul_(e)  # zero on padded keys, as e is
            _x_grad(de, lm_h, x_aug, scale, _part(dk_h, rows))
            _add_product(dlm_h, x_aug.mT, de)
    return dk, dv


def _add_landmark_grad(dq, dk, dlm, rows, from_k) -> None:
    """Adds the landmarks' gradient ``dlm [b, h, m, d]`` into the rows of dQ and dK they came
    from."""
    b, h, n, d = dq.shape
    flat = (rows + n * torch.arange(b * h, device=rows.device).view(b, h, 1)).flatten()
    from_k = from_k.unsqueeze(-1)
    # every landmark into both, zero where it did not come from: picking them by the mask would
    # make a GPU wait for the count of each kind (a host round trip per step)
    for target, other in ((dq, from_k), (dk, ~from_k)):
        target.view(-1, d).index_add_(0, flat, dlm.masked_fill(other, 0).flatten(0, 2))


def skyformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    rows: torch.Tensor,
    from_k: torch.Tensor,
    *,
    scale: float,
    small: SmallPart,
    by_entry: bool = False,
) -> torch.Tensor:
    """``k(Q, L) small(L, k(L, K) V)`` with ``L = scale [Q; K][rows]`` (K's rows where ``from_k``):
    ``q, k, v [b, h, n, d]``, ``rows, from_k [b, h, m]``, ``mask [b, n]`` (1 = real token).

    ``by_entry``: ``small`` treats batch entries independently, so that on a CPU it may run on
    groups of them (``_small_group_elements`` elements of m x m matrices per group). Elsewhere
    it runs on all at once: there each group's m x m work costs kernel launches, not memory."""
    b, h, m = rows.shape
    per = b
    if by_entry and q.device.type in chunked.PER_HEAD_DEVICES:
        per = max(1, _small_group_elements(q) // (h * m * m))
    with without_autocast(q):  # the blocks' products stay in q's dtype (float32) under AMP
        return _Skyformer.apply(q, k, v, rows, from_k, mask, scale, small, per)
