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

Deviation: the LRA code's fixed pattern also lets every query see the first position of
each block (it reads the paper's {l - c, ..., l} modulo l); here only the last c are summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, AttentionConfig
from lra_bench.attention.blocks import blocked, hide, pad_seq, upcast, valid_keys
from lra_bench.attention.registry import register_attention


@dataclass
class SparseConfig(AttentionConfig):
    name: str = "sparse"
    dropout: float = 0.0
    stride: int = 128  # l: block length
    summary: int = 32  # c: the last c positions of every block are seen by every query

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if not 1 <= self.stride <= max_len:
            raise ValueError(f"stride: must be between 1 and the task's max length {max_len}, got {self.stride}")
        if not 0 <= self.summary <= self.stride:
            raise ValueError(f"summary: must be between 0 and stride ({self.stride}), got {self.summary}")


@register_attention("sparse", SparseConfig)
class SparseAttention(Attention):
    cfg: SparseConfig

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        b, h, n, d = q.shape
        blk = min(self.cfg.stride, n)  # l; one block of n covers all
        c = min(self.cfg.summary, blk)
        n_c = math.ceil(n / blk) * blk
        nb = n_c // blk
        valid = pad_seq(valid_keys(mask, q), n_c, dim=1).view(b, nb, blk)
        q_blk, k_blk, v_blk = (blocked(pad_seq(x, n_c), blk) for x in (q * d**-0.5, k, v))

        own = hide(q_blk @ k_blk.transpose(-1, -2), valid.view(b, 1, nb, 1, blk))
        # summary keys of every block, [b, h, nb * c, d]; a query's own block is already in `own`
        k_sum = k_blk[:, :, :, blk - c :].reshape(b, h, nb * c, d)
        v_sum = v_blk[:, :, :, blk - c :].reshape(b, h, nb * c, d)
        key_block = torch.arange(nb, device=q.device).repeat_interleave(c)
        other = key_block.view(1, -1) != torch.arange(nb, device=q.device).view(-1, 1)  # [nb, nb * c]
        allowed = other.unsqueeze(0) & valid[:, :, blk - c :].reshape(b, 1, nb * c)  # [b, nb, nb * c]
        summ = (q_blk.reshape(b, h, n_c, d) @ k_sum.transpose(-1, -2)).view(b, h, nb, blk, nb * c)
        summ = hide(summ, allowed.view(b, 1, nb, 1, nb * c))

        weights = torch.softmax(torch.cat([own, summ], dim=-1), dim=-1)
        weights = F.dropout(weights, p=self.cfg.dropout, training=self.training)
        out = weights[..., :blk] @ v_blk + (weights[..., blk:].reshape(b, h, n_c, nb * c) @ v_sum).view(b, h, nb, blk, d)
        return out.reshape(b, h, n_c, d)[:, :, :n].to(in_dtype)
