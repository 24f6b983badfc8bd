"""Block-local attention (the LRA paper's "Local Attention", Tay et al., 2021, arXiv 2011.04006).

The sequence is cut into consecutive blocks of ``block_size`` tokens; each query attends,
with one softmax, to the real keys of its own block only. A length that is not a multiple
of the block size is padded internally with masked keys. Cost O(n * block_size * d).

Default block 64 (the LRA code's module default is 20; 64 matches the block/chunk size of
bigbird and reformer here). A block of at least n tokens is exact softmax attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.blocks import blocked, hide, pad_seq, valid_keys
from lra_bench.attention.settings.local import LocalConfig


def block_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    block: int,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """softmax within consecutive blocks of ``block`` tokens; ``valid [b, n]`` hides keys."""
    b, h, n, d = q.shape
    n_c = math.ceil(n / block) * block
    q, k, v = (pad_seq(x, n_c) for x in (q, k, v))
    allowed = pad_seq(valid, n_c, dim=1).view(b, 1, n_c // block, 1, block)
    scores = hide(blocked(q * d**-0.5, block) @ blocked(k, block).transpose(-1, -2), allowed)
    weights = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=training)
    return (weights @ blocked(v, block)).reshape(b, h, n_c, d)[:, :, :n]


class LocalAttention(Attention):
    cfg: LocalConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        block = min(self.cfg.block_size, q.shape[2])  # one block of n is the same as one of more
        out = block_local_attention(
            q, k, v, valid_keys(mask, q), block, self.cfg.dropout, self.training
        )
        return out.to(in_dtype)
