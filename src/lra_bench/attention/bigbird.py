"""BigBird block-sparse attention (Zaheer et al., 2020, arXiv 2007.14062), ITC variant.

The sequence is cut into blocks of ``block_size``. Each query block attends to a sliding
window of ``window_blocks`` blocks around itself, to the global first and last blocks and
to ``num_random_blocks`` random other blocks; the global blocks' queries attend to every
key. Softmax over the union of those keys (each block counted once). Cost O(n b (w + r + 2) d).

Blocks are laid over the *valid* tokens: the last global block is the last block holding a
real token, and random blocks are drawn among real blocks, from a draw whose shape depends
on ``max_len`` only, so padding never changes what a real query sees.

Settings that reproduce the Skyformer code (Hugging Face's BigBird; defaults follow the paper):
``pattern: fixed`` draws the random blocks from a generator reseeded with ``pattern_seed`` on
every call, so training, evaluation and every layer share one pattern (the code reseeds numpy
with the run's seed, ``--random``, default 42, on each forward); ``last_global: padded`` makes
the last block of the padded sequence
the global one, whose keys are all padding for a short sequence, and lets random blocks land
on padding (the code lays blocks over the padded length); ``random_span: first_1024`` draws
random blocks among the first 1024 tokens when the padded length is 1024, 3072 or 4096 (the
code's "old plans", the previous parity value). The blocks themselves come from this module's
generator, not numpy's: the same candidates and distribution, not numpy's draw.

``random_span: code`` takes the candidate blocks of every row from the code's plans
(pkuzengqi/Skyformer ``code/models/attention_bigbird.py`` at 6ffd607, Hugging Face's BigBird of
2021): at n = 1024, 3072, 4096 blocks 1 to 1024 / block_size - 1 outside the window, except the
last two middle rows, which draw from all of them, window blocks included; at other lengths
Hugging Face's ``_get_rand_attn_plan`` (at 2048 with 3 random blocks: blocks 1-9 only, the first
704 tokens); one draw per head, shared by the batch. ``duplicates: keep`` counts a random block
that is also a window block twice in the softmax, as the code does; the default counts it once.
``draw: numpy`` (with ``random_span: code`` and ``pattern: fixed``) makes the code's own draw:
numpy seeded with ``pattern_seed`` and its permutations in its order, so a seed gives the code's
pattern itself. The parity file sets ``pattern_seed: ${seed}``, the run's seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lra_bench.attention.base import (
    SampledAttention,
    hidden_score,
    matmul_dtype,
    seeded_generator,
    upcast,
)
from lra_bench.attention.settings.bigbird import BigBirdConfig

MASKED = -1e9  # score offset of a hidden key: exp underflows to exactly 0 next to any visible key


def gather_blocks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Blocks ``idx [b, h, nb, s]`` of ``x [b, h, nb, B, *tail]``.

    Returns ``[b, h, nb, s * B, *tail]``.
    """
    b, h, nb, s = idx.shape
    tail = x.shape[3:]
    flat = x.flatten(3)
    out = flat.gather(2, idx.reshape(b, h, nb * s, 1).expand(-1, -1, -1, flat.shape[-1]))
    return out.view(b, h, nb, s * tail[0], *tail[1:])


class BigBirdAttention(SampledAttention):
    cfg: BigBirdConfig

    PAPER_LENGTHS = (
        1024,
        3072,
        4096,
    )  # lengths whose random blocks the published code takes from the first 1024 tokens

    def block_limits(self, valid: torch.Tensor, n_c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the last global block, number of blocks random keys may come from), each
        ``[b]``.

        By default both follow the real tokens; ``last_global: padded`` uses the padded length
        and ``random_span: first_1024`` caps the random range at the first 1024 tokens.
        """
        bs, b = self.cfg.block_size, valid.shape[0]
        real = (valid.sum(-1) + bs - 1).div(bs, rounding_mode="floor").clamp(min=1)
        if self.cfg.last_global == "padded":
            real = torch.full_like(real, n_c // bs)
        span = real
        if self.cfg.random_span == "first_1024" and n_c in self.PAPER_LENGTHS:
            span = span.clamp(max=1024 // bs)
        return real - 1, span.view(b)

    def draw_random_blocks(
        self, real_blocks: torch.Tensor, nb: int, heads: int, span: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Random key blocks of each query block, ``[b, heads, nb, r]``, -1 where none is left.

        Drawn without replacement among each row's candidates (``random_candidates``): the
        top scores of ``block_scores``. Tests may replace this method to pin the draw.
        """
        b, r = real_blocks.shape[0], self.cfg.num_random_blocks
        if self.cfg.draw == "numpy":
            drawn = numpy_code_draw(nb, self.cfg.block_size, r, heads, self.cfg.pattern_seed)
            return torch.from_numpy(drawn).to(real_blocks.device).expand(b, -1, -1, -1)
        groups = self.random_candidates(real_blocks, nb, span)
        u = self.block_scores(
            1 if self.cfg.random_span == "code" else b, heads, nb, real_blocks.device
        )
        picks = []
        for count, allowed in groups:
            top, idx = torch.where(allowed.unsqueeze(1), u, -1.0).topk(min(count, nb), dim=-1)
            picks.append(torch.where(top >= 0, idx, -1))
        idx = torch.cat(picks, dim=-1)
        return F.pad(idx, (0, r - idx.shape[-1]), value=-1).expand(b, -1, -1, -1)

    def block_scores(
        self, b: int, heads: int, nb: int, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Uniform scores ``[b, heads, nb, nb]`` ranking the key blocks of each query block.

        The draw's shape depends on ``max_len`` only, so padding never changes it. Tests may
        replace this method to pin the ranking.
        """
        size = max(math.ceil(self.max_len / self.cfg.block_size), nb)
        g = self.generator(device)
        u = torch.rand(b, heads, size, size, generator=g, dtype=torch.float64, device=g.device)
        return u[:, :, :nb, :nb].to(device)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The running/eval generator, or one reseeded with ``pattern_seed`` for the fixed
        pattern."""
        if self.cfg.pattern == "fresh":
            return super().generator(device)
        return seeded_generator(self.cfg.pattern_seed, device)

    def random_candidates(
        self, real_blocks: torch.Tensor, nb: int, span: torch.Tensor | None
    ) -> list[tuple[int, torch.Tensor]]:
        """(number of blocks, candidates ``[b or 1, nb, nb]``) of each group of random slots.

        Default: the first ``span`` blocks (default: the real blocks) outside the window and the
        global blocks, ``real_blocks - 1`` being the last global block. ``random_span: code``:
        the code's plans (``code_plan``).
        """
        r, half = self.cfg.num_random_blocks, self.cfg.window_blocks // 2
        if self.cfg.random_span == "code":
            return code_plan(nb, self.cfg.block_size, r, half, real_blocks.device)
        span = real_blocks if span is None else span
        i = torch.arange(nb, device=real_blocks.device)
        j = i.view(1, 1, -1)
        allowed = (
            (j < span.view(-1, 1, 1))
            & ((j - i.view(1, -1, 1)).abs() > half)
            & (j != 0)
            & (j != (real_blocks - 1).view(-1, 1, 1))
        )
        return [(r, allowed)]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        n = q.shape[2]
        q, k, v, valid = self.pad_to_blocks(q, k, v, mask)
        last_block, span = self.block_limits(valid, q.shape[2])
        real_blocks = last_block + 1
        q, k, v = self.with_mask_column(q, k, v, valid)
        idx = self.key_blocks(real_blocks, span, q.shape[2] // self.cfg.block_size, q.shape[1])
        out = self.block_attention(q, k, v, idx)
        out = self.global_rows(q, k, v, out, real_blocks)
        b, h, nb, bs, d = out.shape
        return out.reshape(b, h, nb * bs, d)[:, :, :n].to(in_dtype)

    def pad_to_blocks(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v zero-padded to a whole number of blocks, and the real tokens ``[b, n_c]``."""
        b, _, n, _ = q.shape
        bs = self.cfg.block_size
        n_c = math.ceil(n / bs) * bs
        valid = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
        if n_c > n:
            q, k, v = (F.pad(x, (0, 0, 0, n_c - n)) for x in (q, k, v))
            valid = F.pad(valid, (0, n_c - n), value=False)
        return q, k, v, valid

    def with_mask_column(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The masks ride in the matmul: q (scaled) gets a column of ones, k a column of 0 /
        MASKED, and k, v one more all-masked "null" block (index nb) that dropped slots point
        at, so no pass over the scores is needed. q ``[b, h, n_c, d + 1]``."""
        h, d, bs = q.shape[1], q.shape[-1], self.cfg.block_size
        q = torch.cat([q * d**-0.5, torch.ones_like(q[..., :1])], dim=-1)
        hidden = hidden_score(matmul_dtype(q), MASKED)  # fits the scores' dtype (fp16 autocast)
        bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(~valid, hidden)
        bias = F.pad(bias, (0, bs), value=hidden)
        k = torch.cat(
            [F.pad(k, (0, 0, 0, bs)), bias[:, None, :, None].expand(-1, h, -1, -1)], dim=-1
        )
        return q, k, F.pad(v, (0, 0, 0, bs))

    def key_blocks(
        self, real_blocks: torch.Tensor, span: torch.Tensor, nb: int, h: int
    ) -> torch.Tensor:
        """Key blocks of every query block ``[b, h, nb, s]``: window, global first and last,
        random; a slot that repeats an earlier one (random ones too unless ``duplicates:
        keep``) or has no block points at the null block nb."""
        device = real_blocks.device
        i = torch.arange(nb, device=device)
        last = (real_blocks - 1).view(-1, 1, 1)
        half = self.cfg.window_blocks // 2
        window = (i.view(1, -1, 1) + torch.arange(-half, half + 1, device=device)).clamp(min=0)
        window = torch.minimum(window, last)  # [b, nb, w]
        glob = torch.cat([torch.zeros_like(last), last], dim=-1).expand(-1, nb, -1)
        rand = self.draw_random_blocks(real_blocks, nb, h, span)
        idx = torch.cat(
            [torch.cat([window, glob], dim=-1).unsqueeze(1).expand(-1, h, -1, -1), rand], dim=-1
        )
        same = idx.unsqueeze(-1) == idx.unsqueeze(-2)
        earlier = torch.ones(idx.shape[-1], idx.shape[-1], dtype=torch.bool, device=device)
        earlier = earlier.tril(-1)
        if self.cfg.duplicates == "keep":  # random slots stay, even where they repeat the window
            earlier[window.shape[-1] + 2 :] = False
        slot_ok = (idx >= 0) & ~(same & earlier).any(dim=-1)  # [b, h, nb, s]
        return torch.where(slot_ok, idx, nb)

    def block_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        """Each query block against its key blocks ``idx``: ``[b, h, nb, bs, d]``."""
        b, h, n_c, d1 = q.shape
        bs = self.cfg.block_size
        nb = n_c // bs
        k_sel = gather_blocks(k.view(b, h, nb + 1, bs, d1), idx)  # [b, h, nb, s*bs, d + 1]
        v_sel = gather_blocks(v.view(b, h, nb + 1, bs, d1 - 1), idx)
        scores = q.view(b, h, nb, bs, d1) @ k_sel.transpose(-1, -2)  # [b, h, nb, bs, s*bs]
        weights = F.dropout(
            torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training
        )
        return weights @ v_sel

    def global_rows(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        real_blocks: torch.Tensor,
    ) -> torch.Tensor:
        """``out`` with the global blocks' rows (first and last real block) attending every key."""
        b, h, n_c, d1 = q.shape
        bs = self.cfg.block_size
        nb = n_c // bs
        first_last = torch.stack([torch.zeros_like(real_blocks), real_blocks - 1], dim=-1)
        q_glob = gather_blocks(
            q.view(b, h, nb, bs, d1), first_last.view(b, 1, 1, 2).expand(-1, h, 1, -1)
        )[:, :, 0]
        dense = q_glob @ k[:, :, :n_c].transpose(-1, -2)  # [b, h, 2*bs, n_c]
        weights = F.dropout(
            torch.softmax(dense, dim=-1), p=self.cfg.dropout, training=self.training
        )
        out_g = (weights @ v[:, :, :n_c]).view(b, h, 2, bs, d1 - 1)
        i = torch.arange(nb, device=q.device)
        is_first = (i == 0).view(1, 1, nb, 1, 1)
        is_last = (i.view(1, -1) == real_blocks.view(-1, 1) - 1).view(b, 1, nb, 1, 1)
        return torch.where(is_first, out_g[:, :, :1], torch.where(is_last, out_g[:, :, 1:], out))


def code_plan(
    nb: int, bs: int, r: int, half: int, device: torch.device
) -> list[tuple[int, torch.Tensor]]:
    """The Skyformer code's candidate random blocks, ``[(count, allowed [1, nb, nb])]``.

    Restated from pkuzengqi/Skyformer ``code/models/attention_bigbird.py`` (6ffd607): at padded
    lengths 1024, 3072 and 4096 (its "old plans") every middle row draws r blocks among blocks
    1 to min(1024 / bs - 1, nb - 2) outside its window, except rows nb - 3 and nb - 2, which
    draw among all of them; at other lengths Hugging Face's plan: blocks [0, p) with p =
    2r + 5 blocks when that is fewer than nb, else r // 2 from [0, r + 5) and the rest from
    [r + 5, nb) when r + 5 < nb, else all of [0, nb), each range without its first and last
    block, row 1 without the range's second-to-last block and that block's row without block 1.
    """
    i = torch.arange(nb, device=device).view(-1, 1)
    j = torch.arange(nb, device=device).view(1, -1)
    outside = (j - i).abs() > half
    if nb * bs in (1024, 3072, 4096):
        top = min(1024 // bs - 1 if 1024 > 2 * bs else nb - 1, nb - 2)
        last_rows = (i >= nb - 3) & (i > 2)  # rows 1 and 2 keep their own rule in the code
        return [(r, ((j >= 1) & (j <= top) & (outside | last_rows)).unsqueeze(0))]

    def between(start: int, end: int) -> torch.Tensor:
        ok = (j >= start) & (j < end) & outside & (j != 0) & (j != end - 1)
        ok &= ~((i == 1) & (j == end - 2)) & ~((i == end - 2) & (j == 1))
        return ok.unsqueeze(0)

    if 2 * r + 5 < nb:
        return [(r, between(0, 2 * r + 5))]
    if r + 5 < nb:
        return [(r // 2, between(0, r + 5)), (r - r // 2, between(r + 5, nb))]
    return [(r, between(0, nb))]


def numpy_code_draw(nb: int, bs: int, r: int, heads: int, seed: int) -> np.ndarray:
    """The code's own random blocks ``[heads, nb, r]`` (rows 0 and nb - 1: -1, unused).

    numpy's global generator seeded with ``seed`` as the code does on every forward, then its
    permutations in its order: at 1024, 3072 and 4096 one permutation of each row's candidate
    list per head and row (heads outer) and its first r; elsewhere a permutation of each
    plan range per row and head (heads inner, row nb - 1 drawn too), its first legal blocks.
    """
    rng = np.random.RandomState(seed)
    out = np.full((heads, nb, r), -1, dtype=np.int64)
    groups = code_plan(nb, bs, r, 1, torch.device("cpu"))
    if nb * bs in (1024, 3072, 4096):
        allowed = groups[0][1][0].numpy()
        for h in range(heads):
            for i in range(1, nb - 1):
                pick = rng.permutation(np.flatnonzero(allowed[i]))[:r]
                out[h, i, : len(pick)] = pick
        return out
    for rows, (start, end), col, count in _code_draw_order(nb, r):
        allowed = groups[int(col > 0)][1][0].numpy()  # the range's group: first or second
        for i in rows:
            for h in range(heads):
                order = rng.permutation(np.arange(start, end))
                pick = [j for j in order if allowed[i, j]][:count]
                out[h, i, col : col + len(pick)] = pick
    return out


def _code_draw_order(nb: int, r: int) -> list[tuple[range, tuple[int, int], int, int]]:
    """(rows, block range, first column, count) of the code's draws off its old lengths, in
    the order it makes them (Hugging Face's ``_bigbird_block_rand_mask_with_head``)."""
    if 2 * r + 5 < nb:
        return [(range(1, nb), (0, 2 * r + 5), 0, r)]
    if r + 5 < nb:
        p, a = r + 5, r // 2
        return [
            (range(1, p), (0, p), 0, a),
            (range(1, p), (p, nb), a, r - a),
            (range(p, nb), (0, p), 0, a),
            (range(p, nb), (p, nb), a, r - a),
        ]
    return [(range(1, nb), (0, nb), 0, r)]
