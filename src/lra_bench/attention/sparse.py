"""Sparse Transformer, fixed pattern (Child et al., 2019, arXiv 1904.10509), bidirectional.

The sequence is cut into blocks of l = ``stride`` tokens. Query i attends, with one softmax
over the union (each key once), to (1) every key of its own block, floor(j / l) = floor(i / l),
and (2) the "summary" keys: the last c = ``summary`` positions of every block,
j mod l >= l - c. This is the paper's merged "fixed" pattern, as LRA used it (defaults l = 128,
c = 32, the paper's EnWik8 setting and the LRA code's default), without the causal mask since
LRA classifies whole sequences. Padded keys are hidden; a length that is not a multiple of l
is padded internally with masked keys.

Cost O(n (l + c n / l) d): linear in n for the block part, quadratic with factor c / l for
the summary part (O(n^1.5) when l ~ sqrt(n), the paper's regime). A stride of n or more is
exact softmax attention.

Settings that reproduce the LRA code (defaults follow the paper's pattern for classification):
``causal`` lets query i see keys j <= i only (the LRA code makes every pattern causal, although
its tasks classify whole sequences); ``block_start_summary`` adds the first position of every
block to the summaries (the LRA code reads the paper's {l - c, ..., l} modulo l, so position
0 of each block is a summary too).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.blocks import blocked, hide, pad_seq, valid_keys
from lra_bench.attention.settings.sparse import SparseConfig


class SparseAttention(Attention):
    cfg: SparseConfig

    def summary_offsets(self, blk: int, c: int, device: torch.device) -> torch.Tensor:
        """Positions within a block that every (later, when causal) query sees: the last c, plus 0
        on request."""
        offsets = torch.arange(blk - c, blk, device=device)
        if self.cfg.block_start_summary and blk - c > 0:
            offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), offsets])
        return offsets

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        b, h, n, d = q.shape
        blk = min(self.cfg.stride, n)  # l; one block of n covers all
        c = min(self.cfg.summary, blk)
        n_c = math.ceil(n / blk) * blk
        nb = n_c // blk
        valid = pad_seq(valid_keys(mask, q), n_c, dim=1).view(b, nb, blk)
        q_blk, k_blk, v_blk = (blocked(pad_seq(x, n_c), blk) for x in (q * d**-0.5, k, v))

        pos = torch.arange(blk, device=q.device)
        own_ok = valid.view(b, 1, nb, 1, blk)
        if self.cfg.causal:
            own_ok = own_ok & (pos.view(-1, 1) >= pos.view(1, -1))  # [.., query, key]
        own = hide(q_blk @ k_blk.transpose(-1, -2), own_ok)
        # summary keys of every block, [b, h, nb * c, d]; a query's own block is already in `own`
        offsets = self.summary_offsets(blk, c, q.device)
        c = offsets.numel()
        k_sum = k_blk[:, :, :, offsets].reshape(b, h, nb * c, d)
        v_sum = v_blk[:, :, :, offsets].reshape(b, h, nb * c, d)
        key_block = torch.arange(nb, device=q.device).repeat_interleave(c)
        query_block = torch.arange(nb, device=q.device).view(-1, 1)
        other = (
            key_block.view(1, -1) < query_block
            if self.cfg.causal
            else key_block.view(1, -1) != query_block
        )  # [nb, nb * c]
        allowed = other.unsqueeze(0) & valid[:, :, offsets].reshape(b, 1, nb * c)  # [b, nb, nb * c]
        summ = (q_blk.reshape(b, h, n_c, d) @ k_sum.transpose(-1, -2)).view(b, h, nb, blk, nb * c)
        summ = hide(summ, allowed.view(b, 1, nb, 1, nb * c))

        weights = torch.softmax(torch.cat([own, summ], dim=-1), dim=-1)
        weights = F.dropout(weights, p=self.cfg.dropout, training=self.training)
        out = weights[..., :blk] @ v_blk + (
            weights[..., blk:].reshape(b, h, n_c, nb * c) @ v_sum
        ).view(b, h, nb, blk, d)
        return out.reshape(b, h, n_c, d)[:, :, :n].to(in_dtype)
