"""Sparse Sinkhorn attention (Tay et al., 2020, arXiv 2002.11296): learned sorting of key blocks.

The sequence is cut into blocks of ``block_size``. Each key block is pooled (the paper's sum,
or ``pool: mean``) over its real keys; a learned sorting network, one Linear d -> max_blocks
shared by the heads (as the LRA code), maps block i to logits R_ij of receiving block j.
Sinkhorn normalisation in log space (``sinkhorn_iters`` rounds of row then column
log-sum-exp, after dividing by ``temperature``) turns R into a soft permutation P; the sorted
blocks are K_S,i = sum_j P_ij K_j and V_S,i = sum_j P_ij V_j. Query block i attends, with one
softmax, to the concatenation of its own block and its sorted partner block. Cost
O(n * 2 block * d + (n / block)^2 * block * d); the sorting network is trained with the model.

Padding: padded keys and values are zeroed before pooling and sorting, a sorted slot that
receives no real key (zero sorted mask mass, as the LRA code's sorted mask) is hidden, and
Sinkhorn runs over the blocks holding a real token only, so padding never reaches a real query.

Deviations: no Gumbel noise (deterministic Sinkhorn); the LRA code sums two separate softmaxes
(own block, sorted block) and by default uses a row softmax instead of Sinkhorn; here one
softmax over both, as in the paper. Defaults of 5 Sinkhorn rounds and temperature 0.75 are
this module's choice (the LRA code's Sinkhorn option: 1 round, temperature 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.attention.base import Attention, hidden_score, upcast
from lra_bench.attention.blocks import MASKED, blocked, hide, pad_seq, valid_keys
from lra_bench.attention.settings.sinkhorn import SinkhornConfig


def log_sinkhorn(log_alpha: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` rounds of row then column normalisation of ``exp(log_alpha)`` in log space."""
    for _ in range(iters):
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-1, keepdim=True)
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-2, keepdim=True)
    return log_alpha


class SinkhornAttention(Attention):
    cfg: SinkhornConfig

    def __init__(self, cfg: SinkhornConfig, *, head_dim: int, num_heads: int, max_len: int) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        self.max_blocks = math.ceil(max_len / cfg.block_size)
        self.sort_net = nn.Linear(head_dim, self.max_blocks)

    def sort_matrix(self, logits: torch.Tensor, real_blocks: torch.Tensor) -> torch.Tensor:
        """Soft permutation ``[b, h, nb, nb]`` from the logits, over the real blocks ``[b, nb]``
        only.

        Real and padding blocks never mix (their cross terms are exactly 0). Tests may replace
        this method to pin the permutation.
        """
        same = real_blocks.unsqueeze(-1) == real_blocks.unsqueeze(-2)  # [b, nb, nb]
        log_alpha = logits / self.cfg.temperature
        log_alpha = log_alpha.masked_fill(~same.unsqueeze(1), hidden_score(log_alpha.dtype, MASKED))
        return log_sinkhorn(log_alpha, self.cfg.sinkhorn_iters).exp()

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        b, h, n, d = q.shape
        if n > self.max_len:
            raise ValueError(
                f"sinkhorn: sequence length {n} exceeds the max_len {self.max_len} it was built for"
            )
        bs = self.cfg.block_size
        n_c = math.ceil(n / bs) * bs
        nb = n_c // bs
        valid = pad_seq(valid_keys(mask, q), n_c, dim=1)
        keep = valid[:, None, :, None].to(k.dtype)
        q_blk = blocked(pad_seq(q * d**-0.5, n_c), bs)
        k_blk, v_blk = (blocked(pad_seq(x, n_c) * keep, bs) for x in (k, v))  # padded keys zeroed
        valid_blk = valid.view(b, nb, bs)

        emb = k_blk.sum(dim=3)  # [b, h, nb, d]
        if self.cfg.pool == "mean":
            emb = emb / valid_blk.sum(-1).clamp(min=1).view(b, 1, nb, 1).to(emb.dtype)
        logits = F.linear(
            emb, self.sort_net.weight[:nb].to(emb.dtype), self.sort_net.bias[:nb].to(emb.dtype)
        )
        perm = self.sort_matrix(logits, valid_blk.any(dim=-1))  # [b, h, nb, nb]

        k_sorted = torch.einsum("bhij,bhjtd->bhitd", perm, k_blk)
        v_sorted = torch.einsum("bhij,bhjtd->bhitd", perm, v_blk)
        mass = torch.einsum(
            "bhij,bjt->bhit", perm, valid_blk.to(perm.dtype)
        )  # real share of each sorted slot
        keys = torch.cat([k_blk, k_sorted], dim=3)  # [b, h, nb, 2 bs, d]
        values = torch.cat([v_blk, v_sorted], dim=3)
        allowed = torch.cat(
            [valid_blk.unsqueeze(1).expand(-1, h, -1, -1), mass > 0], dim=-1
        )  # [b, h, nb, 2 bs]
        scores = hide(q_blk @ keys.transpose(-1, -2), allowed.unsqueeze(-2))
        weights = F.dropout(
            torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training
        )
        return (weights @ values).reshape(b, h, n_c, d)[:, :, :n].to(in_dtype)
