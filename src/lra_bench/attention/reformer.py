"""Reformer LSH attention (Kitaev et al., 2020, arXiv 2001.04451).

Shared QK: keys are the queries normalised to unit length (the ``k`` argument is unused,
so the model's key projection gets no gradient). Each of ``num_hashes`` rounds hashes the
queries by a random rotation, h(x) = argmax([xR; -xR]), sorts tokens by (bucket, position),
cuts the sorted order into chunks of ``chunk_size`` and lets every query attend to its own
chunk and the previous one. A token attends to itself only when it has nothing else (its
score is -1e5, as the reference implementations). Rounds are combined with weights
softmax over rounds of each round's log-sum-exp. Cost O(n * hashes * chunk * d).

The first chunk's previous chunk is the last one (wrap-around, ``wrap: true``), as in the
authors' code (Trax's ``look_adjacent``) and Hugging Face's, which the published LRA and
Skyformer rows ran; the paper's "one chunk back" does not settle the first chunk, and with
sorted buckets the wrap joins the two ends of the bucket order. ``wrap: false`` gives the
first chunk no previous chunk. Padded tokens are sorted after every real token and the wrap
goes to the last chunk holding a real token, so padding never changes which keys a real query
sees.

Settings that reproduce Hugging Face's ``LSHSelfAttention`` (transformers, ``modeling_reformer.py``
at commit 000824f17f924a8b520edf04c597c461fc83356a), which the Skyformer code calls
(pkuzengqi/Skyformer ``code/models/attention_reformer.py`` at 6ffd607); defaults follow the paper:
``rounds_joined: true`` sorts all hash rounds as one sequence (bucket numbers offset per round),
so the first chunk of round r looks back to the last chunk of round r - 1 and round 0's to the
last round's, and a token's copy from another round in that chunk is masked like itself;
``wrap_to: padded`` wraps to the padded sequence's last chunk (padding included, its keys hidden);
``key_norm: root`` divides keys by sqrt(|q|^2 + d 1e-6) (Hugging Face's eps inside the square
root) instead of max(|q|, 1e-6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import (
    SampledAttention,
    hidden_score,
    matmul_dtype,
    upcast,
)
from lra_bench.attention.settings.reformer import ReformerConfig

SELF_SCORE = -1e5  # a token's score for itself: used only when nothing else is visible
MASKED_SCORE = -1e9  # padded keys and the missing chunk before the first


class ReformerAttention(SampledAttention):
    uses_keys = False
    cfg: ReformerConfig

    @property
    def num_buckets(self) -> int:
        return self.cfg.num_buckets or 2 * math.ceil(self.max_len / self.cfg.chunk_size)

    def draw_rotations(
        self, heads: int, d: int, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Random rotations ``[heads, d, num_hashes, num_buckets // 2]`` (float64, on ``device``).

        Tests may replace this method to pin the hashes.
        """
        shape = (heads, d, self.cfg.num_hashes, max(self.num_buckets // 2, 1))
        g = self.generator(device)
        return torch.randn(shape, generator=g, dtype=torch.float64, device=g.device)

    def hash_buckets(self, x: torch.Tensor) -> torch.Tensor:
        """Bucket of each token in each round, ``[b, h, hashes, n]``."""
        b, h, n, d = x.shape
        rot = self.draw_rotations(h, d, device=x.device).to(device=x.device, dtype=x.dtype)
        if self.num_buckets == 1:
            return torch.zeros(b, h, self.cfg.num_hashes, n, dtype=torch.long, device=x.device)
        with torch.no_grad():
            r = torch.einsum("bhnd,hdrk->bhrnk", x, rot)
            high, arg_high = r.max(dim=-1)  # argmax of [xR, -xR] without building it
            low, arg_low = r.min(dim=-1)
            return torch.where(high >= -low, arg_high, arg_low + rot.shape[-1])

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, v = upcast(q, v)
        n = q.shape[2]
        q, v, valid = pad_to_chunks(q, v, mask, self.cfg.chunk_size)
        buckets = self.hash_buckets(q)  # [b, h, r, n_c]
        pos = torch.arange(q.shape[2], device=q.device)
        sort_key = (
            torch.where(valid[:, None, None, :], buckets, self.num_buckets) * q.shape[2] + pos
        )
        perm = sort_key.argsort(dim=-1)  # [b, h, r, n_c]: padding sorted after every real token
        out_s, lse = self.chunk_attention(q, v, valid, buckets, perm)
        return combine_rounds(out_s, lse, perm)[:, :, :n].to(in_dtype)

    def chunk_attention(
        self,
        q: torch.Tensor,
        v: torch.Tensor,
        valid: torch.Tensor,
        buckets: torch.Tensor,
        perm: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sorted chunk's queries against the previous and own chunk's keys, in every round:
        outputs ``[b, h, r, n_c, d]`` in sorted order and each query's log-sum-exp of scores."""
        b, h, n_c, d = q.shape
        c, rounds = self.cfg.chunk_size, self.cfg.num_hashes
        # masks ride in the matmul: queries get a column of ones, keys a column of 0 / MASKED_SCORE
        hidden = hidden_score(matmul_dtype(q), MASKED_SCORE)  # fits the scores' dtype (fp16)
        bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(~valid, hidden)
        keys = torch.cat(
            [unit_keys(q, self.cfg.key_norm), bias[:, None, :, None].expand(-1, h, -1, -1)], dim=-1
        )
        queries = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)
        null_k = torch.zeros(d + 1, dtype=q.dtype, device=q.device)
        null_k[-1:].fill_(hidden)  # not null_k[-1] = hidden: that waits for a GPU (a host copy)
        prev = self.previous_chunks(valid, n_c // c)
        k_w = window(sort_into_chunks(keys, perm, c), null_k, prev)
        v_w = window(sort_into_chunks(v, perm, c), v.new_zeros(d), prev)
        scores = sort_into_chunks(queries, perm, c) @ k_w.transpose(-1, -2)  # [b, h, r, C, c, 2c]
        if self.cfg.same_bucket_only:
            b_s = buckets.gather(3, perm).view(b, h, rounds, n_c // c, c, 1)
            other = b_s != window(b_s, buckets.new_full((1,), -1), prev).transpose(-1, -2)
            scores = scores.masked_fill(other, hidden_score(scores.dtype, MASKED_SCORE))
        self_score = max(SELF_SCORE, hidden_score(scores.dtype) / 2)  # above hidden keys
        if self.cfg.rounds_joined:  # a previous chunk may hold the query's copy from another round
            pos = perm.view(b, h, rounds, n_c // c, c, 1)
            pos_w = window(pos, perm.new_full((1,), -1), prev)[..., 0]
            scores.masked_fill_(pos == pos_w.unsqueeze(-2), self_score)
        else:
            scores.diagonal(offset=c, dim1=-2, dim2=-1).fill_(self_score)
        # a chunk that is its own previous chunk (one real chunk, one round): hide the duplicate
        alone = prev == torch.arange(rounds * (n_c // c), device=q.device).view(rounds, -1)
        scores[..., :c].masked_fill_(
            alone.view(b, 1, rounds, n_c // c, 1, 1), hidden_score(scores.dtype, MASKED_SCORE)
        )
        lse = scores.logsumexp(dim=-1, keepdim=True)
        probs = F.dropout(torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training)
        return (probs @ v_w).view(b, h, rounds, n_c, d), lse

    def previous_chunks(self, valid: torch.Tensor, chunks: int) -> torch.Tensor:
        """The chunk each chunk looks back to, ``[b, rounds, chunks]``, as an index into the
        ``rounds * chunks`` sorted chunks of all rounds; ``rounds * chunks`` means none.

        Chunk j > 0 sees chunk j - 1 of its round. The first chunk of a round sees the last chunk
        (``wrap_to``: the last holding a real token, or the padded sequence's last) of its own
        round, or with ``rounds_joined`` of the previous round (round 0: of the last round);
        with ``wrap: false`` round 0's first chunk (every round's, unless joined) sees none.
        """
        rounds, c = self.cfg.num_hashes, self.cfg.chunk_size
        if self.cfg.wrap_to == "padded":
            last = torch.full((valid.shape[0], 1), chunks - 1, device=valid.device)
        else:
            real = (valid.sum(-1, keepdim=True) + c - 1).div(c, rounding_mode="floor")
            last = real.clamp(min=1) - 1
        flat = torch.arange(rounds * chunks, device=valid.device)
        r, j = flat.div(chunks, rounding_mode="floor"), flat % chunks
        source = (r - 1) % rounds if self.cfg.rounds_joined else r
        out = torch.where(j == 0, source * chunks + last, flat - 1)  # [b, rounds * chunks]
        if not self.cfg.wrap:
            none = (j == 0) & ((r == 0) | (not self.cfg.rounds_joined))
            out = torch.where(none, rounds * chunks, out)
        return out.view(-1, rounds, chunks)


def unit_keys(q: torch.Tensor, rule: str) -> torch.Tensor:
    """Shared-QK keys: q over its length, ``clamp``: max(|q|, 1e-6), ``root``: sqrt(|q|^2 + d
    1e-6)."""
    if rule == "root":
        return q * torch.rsqrt(q.pow(2).sum(-1, keepdim=True) + q.shape[-1] * 1e-6)
    return F.normalize(q, dim=-1, eps=1e-6)


def pad_to_chunks(
    q: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, c: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q and v padded to whole chunks of ``c`` tokens, and the valid-token mask ``[b, n_c]`` (extra
    slots are padding)."""
    b, _, n, _ = q.shape
    n_c = math.ceil(n / c) * c
    valid = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
    if n_c > n:
        q, v = F.pad(q, (0, 0, 0, n_c - n)), F.pad(v, (0, 0, 0, n_c - n))
        valid = F.pad(valid, (0, n_c - n), value=False)
    return q, v, valid


def sort_into_chunks(x: torch.Tensor, perm: torch.Tensor, c: int) -> torch.Tensor:
    """``[b, h, n_c, e]`` -> ``[b, h, r, chunks, c, e]`` in each round's sorted order
    ``perm`` ``[b, h, r, n_c]``."""
    b, h, rounds, n_c = perm.shape
    e = x.shape[-1]
    idx = perm.unsqueeze(-1).expand(-1, -1, -1, -1, e)
    return (
        x.unsqueeze(2)
        .expand(-1, -1, rounds, -1, -1)
        .gather(3, idx)
        .view(b, h, rounds, n_c // c, c, e)
    )


def window(x: torch.Tensor, null: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Keys of each chunk's window ``[b, h, r, chunks, 2c, e]``: its previous chunk then its own.

    ``prev [b, r, chunks]`` indexes the ``r * chunks`` chunks of all rounds; index ``r * chunks``
    is a chunk of ``null`` rows.
    """
    b, h, rounds, chunks, c, e = x.shape
    flat = torch.cat([x.flatten(2, 3), null.expand(b, h, 1, c, e)], dim=2)
    idx = prev.reshape(b, 1, rounds * chunks, 1, 1).expand(-1, h, -1, c, e)
    before = flat.gather(2, idx).view(b, h, rounds, chunks, c, e)
    return torch.cat([before, x], dim=4)


def combine_rounds(out_s: torch.Tensor, lse: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Outputs back in token order, the rounds weighted by softmax over their log-sum-exp:
    ``[b, h, n_c, d]``."""
    b, h, rounds, n_c, d = out_s.shape
    pos = torch.arange(n_c, device=perm.device)
    inv = torch.empty_like(perm).scatter_(
        -1, perm, pos.expand_as(perm)
    )  # sorted slot of each token
    out_r = out_s.gather(3, inv.unsqueeze(-1).expand(-1, -1, -1, -1, d))
    lse_r = lse.view(b, h, rounds, n_c).gather(3, inv)
    weights = torch.softmax(lse_r, dim=2).unsqueeze(-1)
    return (weights * out_r).sum(dim=2)
