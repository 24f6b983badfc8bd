"""Informer ProbSparse self-attention (Zhou et al., 2021, arXiv 2012.07436), encoder (non-causal)
form.

Each query's sparsity M(q) = max_j s_j - mean_j s_j is estimated on U = c ceil(ln L) keys
sampled for it (s = q.k / sqrt d); the u = c ceil(ln L) queries with the largest M get full
softmax attention, every other query gets the mean of V. Cost O(n log n d).

L is each sequence's count of real tokens, the samples come from real tokens and the draw's
shape depends on ``max_len`` only, so padding never changes a real token's output. The
estimate averages the sampled scores (the paper's formula).

Settings that reproduce published code (defaults follow the paper):
``nb_features`` > 0 sets c = ceil(nb_features / ln max_len) (the Skyformer code: 128 features,
c = 16-19 at LRA lengths); ``sparsity_mean: length`` divides the sampled scores' sum by L
instead of by their count (the Informer and Skyformer code); ``ignore_mask`` treats padded
tokens as ordinary tokens (the Skyformer code never reads the mask in this variant);
``key_samples: shared`` draws one set of sampled keys ``[n, U]`` for every sequence and head
(the Skyformer code's ``torch.randint(L_K, (L_Q, U))``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import (
    SampledAttention,
    key_padding_bias,
    uniform_indices,
    upcast,
    valid_lengths,
)
from lra_bench.attention.settings.informer import InformerConfig


def log_budget(factor: int, length: torch.Tensor | int) -> torch.Tensor:
    """min(max(c ceil(ln L), 1), L): the number of sampled keys and of selected queries."""
    lengths = torch.as_tensor(length).clamp(min=1)
    budget = factor * torch.ceil(torch.log(lengths.double())).long()
    return torch.minimum(budget.clamp(min=1), lengths)


def budget_of(factor: int, length: int) -> int:
    """``log_budget`` of one length, computed on the host without a tensor."""
    length = max(length, 1)
    return min(max(factor * math.ceil(math.log(length)), 1), length)


class InformerAttention(SampledAttention):
    cfg: InformerConfig

    @property
    def factor(self) -> int:
        return self.cfg.effective_factor(self.max_len)

    def draw_key_samples(self, lengths: torch.Tensor, n: int, heads: int) -> torch.Tensor:
        """Sampled keys of every query, ``[b, heads, n, U]`` with U = c ceil(ln max_len).

        Uniform with replacement over each sequence's real tokens; a sequence of length L
        uses the first c ceil(ln L) of them. ``key_samples: shared``: the Skyformer code's one
        draw ``[n, c ceil(ln n)]`` over all n positions, for every sequence and head. Tests may
        replace this method to pin the draw.
        """
        g = self.generator(lengths.device)
        if self.cfg.key_samples == "shared":  # the Skyformer code: torch.randint(L, (L, U))
            drawn = torch.randint(n, (n, budget_of(self.factor, n)), generator=g, device=g.device)
            return drawn.to(lengths.device).expand(lengths.shape[0], heads, -1, -1)
        size = max(self.max_len, n)
        samples = budget_of(self.factor, size)
        return uniform_indices(lengths, (heads, size, samples), g)[:, :, :n]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        b, h, n, d = q.shape
        if self.cfg.ignore_mask:
            mask = None
        q = q * d**-0.5
        lengths = valid_lengths(mask, b, n, q.device)
        budget = log_budget(self.factor, lengths).to(q.device)  # [b]

        with torch.no_grad():  # the sparsity measure only ranks queries
            idx = self.draw_key_samples(lengths, n, h)  # [b, h, n, U]
            u_max = idx.shape[-1]
            k_s = k.gather(2, idx.reshape(b, h, -1, 1).expand(-1, -1, -1, d)).view(
                b, h, n, u_max, d
            )
            s = (q.unsqueeze(-2) @ k_s.transpose(-1, -2)).squeeze(-2)  # [b, h, n, U]
            used = torch.arange(u_max, device=q.device) < budget.view(-1, 1, 1, 1)
            top = s.masked_fill(~used, -math.inf).amax(dim=-1)
            divisor = budget if self.cfg.sparsity_mean == "samples" else lengths.clamp(min=1)
            mean = (s * used).sum(-1) / divisor.view(-1, 1, 1).to(s.dtype)
            sparsity = top - mean
            if mask is not None:
                sparsity = sparsity.masked_fill(~mask[:, None, :], -math.inf)
            n_top = budget_of(self.factor, n)
            chosen = sparsity.topk(n_top, dim=-1).indices  # [b, h, n_top], most sparse first
            slot_ok = torch.arange(n_top, device=q.device) < budget.view(-1, 1, 1)

        q_top = q.gather(2, chosen.unsqueeze(-1).expand(-1, -1, -1, d))
        scores = q_top @ k.transpose(-1, -2)
        bias = key_padding_bias(mask, scores.dtype)
        weights = torch.softmax(scores if bias is None else scores + bias, dim=-1)
        weights = F.dropout(weights, p=self.cfg.dropout, training=self.training)
        out_top = weights @ v  # [b, h, n_top, d]

        v_real = v if mask is None else v * mask[:, None, :, None].to(v.dtype)
        v_mean = v_real.sum(dim=2, keepdim=True) / lengths.clamp(min=1).view(-1, 1, 1, 1).to(
            v.dtype
        )
        out_top = torch.where(slot_ok.unsqueeze(-1), out_top, v_mean)
        out = v_mean.expand(b, h, n, d).scatter(
            2, chosen.unsqueeze(-1).expand(-1, -1, -1, d), out_top
        )
        return out.to(in_dtype)
