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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lra_bench.attention.base import AttentionConfig, SampledAttention, hidden_score, matmul_dtype
from lra_bench.attention.registry import register_attention

SELF_SCORE = -1e5  # a token's score for itself: used only when nothing else is visible
MASKED_SCORE = -1e9  # padded keys and the missing chunk before the first


@dataclass
class ReformerConfig(AttentionConfig):
    name: str = "reformer"
    dropout: float = 0.0
    num_hashes: int = 2
    chunk_size: int = 64  # tokens per chunk of the sorted sequence
    num_buckets: int = 0  # 0 = 2 * ceil(max_len / chunk_size) (the paper's n_buckets = 2 n / chunk); else 1 or even
    same_bucket_only: bool = (
        False  # also mask keys of another bucket inside the window (off in the reference code)
    )
    wrap: bool = True  # the first chunk also sees the last chunk holding a real token (as the Trax and Hugging Face code)

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if self.num_hashes < 1:
            raise ValueError(f"num_hashes: must be >= 1, got {self.num_hashes}")
        if not 1 <= self.chunk_size <= max_len:
            raise ValueError(
                f"chunk_size: must be between 1 and the task's max length {max_len}, got {self.chunk_size}"
            )
        if self.num_buckets < 0 or (self.num_buckets > 1 and self.num_buckets % 2):
            raise ValueError(f"num_buckets: must be 0 (auto), 1 or even, got {self.num_buckets}")


@register_attention("reformer", ReformerConfig)
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
        if in_dtype in (torch.float16, torch.bfloat16):
            q, v = q.float(), v.float()
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
        hidden = hidden_score(
            matmul_dtype(q), MASKED_SCORE
        )  # fits the scores' dtype (fp16 under autocast)
        bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(~valid, hidden)
        keys = torch.cat(
            [F.normalize(q, dim=-1, eps=1e-6), bias[:, None, :, None].expand(-1, h, -1, -1)], dim=-1
        )
        queries = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)
        null_k = torch.zeros(d + 1, dtype=q.dtype, device=q.device)
        null_k[-1] = hidden
        real_chunks = (valid.sum(-1) + c - 1).div(c, rounding_mode="floor").clamp(min=1)  # [b]
        prev = previous_chunks(real_chunks, n_c // c) if self.cfg.wrap else None
        k_w = window(sort_into_chunks(keys, perm, c), null_k, prev)
        v_w = window(
            sort_into_chunks(v, perm, c), torch.zeros(d, dtype=v.dtype, device=v.device), prev
        )
        scores = sort_into_chunks(queries, perm, c) @ k_w.transpose(
            -1, -2
        )  # [b, h, r, chunks, c, 2c]
        if self.cfg.same_bucket_only:
            b_s = buckets.gather(3, perm).view(b, h, rounds, n_c // c, c, 1)
            other = b_s != window(b_s, torch.full((1,), -1, device=q.device), prev).transpose(
                -1, -2
            )
            scores = scores.masked_fill(other, hidden_score(scores.dtype, MASKED_SCORE))
        scores.diagonal(offset=c, dim1=-2, dim2=-1).fill_(
            max(SELF_SCORE, hidden_score(scores.dtype) / 2)
        )  # a token and itself, above hidden keys
        if (
            prev is not None
        ):  # a sequence of one chunk: its "previous" chunk is itself, hide the duplicate
            alone = (real_chunks == 1).view(b, 1, 1, 1, 1, 1) & (
                torch.arange(n_c // c, device=q.device) == 0
            ).view(1, 1, 1, -1, 1, 1)
            scores[..., :c].masked_fill_(alone, hidden_score(scores.dtype, MASKED_SCORE))
        lse = scores.logsumexp(dim=-1, keepdim=True)
        probs = F.dropout(torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training)
        return (probs @ v_w).view(b, h, rounds, n_c, d), lse


def pad_to_chunks(
    q: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, c: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q and v padded to whole chunks of ``c`` tokens, and the valid-token mask ``[b, n_c]`` (extra slots are padding)."""
    b, _, n, _ = q.shape
    n_c = math.ceil(n / c) * c
    valid = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
    if n_c > n:
        q, v = F.pad(q, (0, 0, 0, n_c - n)), F.pad(v, (0, 0, 0, n_c - n))
        valid = F.pad(valid, (0, n_c - n), value=False)
    return q, v, valid


def sort_into_chunks(x: torch.Tensor, perm: torch.Tensor, c: int) -> torch.Tensor:
    """``[b, h, n_c, e]`` -> ``[b, h, r, chunks, c, e]`` in each round's sorted order ``perm`` ``[b, h, r, n_c]``."""
    b, h, rounds, n_c = perm.shape
    e = x.shape[-1]
    idx = perm.unsqueeze(-1).expand(-1, -1, -1, -1, e)
    return (
        x.unsqueeze(2)
        .expand(-1, -1, rounds, -1, -1)
        .gather(3, idx)
        .view(b, h, rounds, n_c // c, c, e)
    )


def previous_chunks(real_chunks: torch.Tensor, chunks: int) -> torch.Tensor:
    """The chunk before each chunk, ``[b, chunks]``, wrapping the first to the last chunk holding a real token."""
    prev = (
        torch.arange(chunks, device=real_chunks.device)
        .sub(1)
        .view(1, -1)
        .expand(real_chunks.shape[0], -1)
    )
    return torch.where(prev < 0, real_chunks.view(-1, 1) - 1, prev)


def window(x: torch.Tensor, null: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Keys of each chunk's window ``[b, h, r, chunks, 2c, e]``: the previous chunk then its own.

    Without ``prev`` the first chunk's previous chunk is ``null``; with it, chunk j's is ``prev[:, j]``.
    """
    b, h, rounds, chunks, c, e = x.shape
    if prev is None:
        before = torch.cat([null.expand(b, h, rounds, 1, c, -1), x[:, :, :, :-1]], dim=3)
    else:
        before = x.gather(3, prev.view(b, 1, 1, chunks, 1, 1).expand(-1, h, rounds, -1, c, e))
    return torch.cat([before, x], dim=4)


def combine_rounds(out_s: torch.Tensor, lse: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Outputs back in token order, the rounds weighted by softmax over their log-sum-exp: ``[b, h, n_c, d]``."""
    b, h, rounds, n_c, d = out_s.shape
    pos = torch.arange(n_c, device=perm.device)
    inv = torch.empty_like(perm).scatter_(
        -1, perm, pos.expand_as(perm)
    )  # sorted slot of each token
    out_r = out_s.gather(3, inv.unsqueeze(-1).expand(-1, -1, -1, -1, d))
    lse_r = lse.view(b, h, rounds, n_c).gather(3, inv)
    weights = torch.softmax(lse_r, dim=2).unsqueeze(-1)
    return (weights * out_r).sum(dim=2)
