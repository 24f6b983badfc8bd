"""Longformer attention (Beltagy et al., 2020, arXiv 2004.05150): sliding window + global first
token.

Query i attends to the keys j with |i - j| <= ``window`` and to the first token; the first
token attends to every key (global attention, as for a classification token). One softmax per
query over that union, each key counted once; padded keys are hidden.

Banded computation: queries are cut into chunks of c = window tokens and chunk i multiplies
the overlapping key span [i c - window, (i + 1) c + window) plus the first key, so memory and
time are O(n * (3 window + 1) * d), plus O(n d) for the global row.

Deviations: Longformer (and the LRA code) has separate projections for global attention; the
interface gives one q, k, v, so the global token uses them too. The default window of 256
tokens on each side follows the LRA code's 512-token sliding window (256 + 1 + 256 here).
A window of n - 1 or more is exact softmax attention.

``global_first: false`` drops the global token: a pure sliding window, as the LRA code ran
(its classifier passes no global mask, so no token is global).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.blocks import blocked, hide, pad_seq, valid_keys
from lra_bench.attention.settings.longformer import LongformerConfig


class LongformerAttention(Attention):
    cfg: LongformerConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        b, h, n, d = q.shape
        p = self.cfg.dropout if self.training else 0.0
        valid = valid_keys(mask, q)
        q = q * d**-0.5
        w = min(self.cfg.window, n)  # a band of n already covers every key
        c = max(w, 1)  # query chunk length
        span = c + 2 * w  # keys seen by one chunk
        n_c = math.ceil(n / c) * c

        # key j of chunk i sits at slot s = j - (i c - w) of that chunk's span; the first key
        # is appended to every span as slot `span` (the global column) and hidden inside the band
        pad = (0, 0, w, n_c - n + w)
        nb = n_c // c
        k_first = k[:, :, None, :1].expand(-1, -1, nb, -1, -1)
        v_first = v[:, :, None, :1].expand(-1, -1, nb, -1, -1)
        keys = torch.cat(
            [F.pad(k, pad).unfold(2, span, c).transpose(-1, -2), k_first], dim=3
        )  # [b, h, nb, span + 1, d]
        values = torch.cat([F.pad(v, pad).unfold(2, span, c).transpose(-1, -2), v_first], dim=3)
        valid_pad = F.pad(valid, (w, n_c - n + w), value=False)
        glob = self.cfg.global_first
        if glob:
            valid_pad[:, w] = False  # the first key, reached through the global column instead
        valid_win = torch.cat(
            [valid_pad.unfold(1, span, c), valid[:, None, :1].expand(-1, nb, -1) & glob], dim=-1
        )
        r = torch.arange(c, device=q.device).view(-1, 1)
        s = torch.arange(span + 1, device=q.device).view(1, -1)
        band = ((s >= r) & (s <= r + 2 * w)) | (
            s == span
        )  # |i - j| <= w, or the first key: [c, span + 1]
        allowed = band & valid_win.unsqueeze(2)  # [b, nb, c, span + 1]

        scores = hide(blocked(pad_seq(q, n_c), c) @ keys.transpose(-1, -2), allowed.unsqueeze(1))
        weights = F.dropout(torch.softmax(scores, dim=-1), p=p, training=self.training)
        out = (weights @ values).reshape(b, h, n_c, d)[:, :, :n]
        if not glob:
            return out.to(in_dtype)

        # the first token is global: it attends to every key
        first = hide(q[:, :, :1] @ k.transpose(-1, -2), valid[:, None, None, :])
        first = F.dropout(torch.softmax(first, dim=-1), p=p, training=self.training) @ v
        return torch.cat([first, out[:, :, 1:]], dim=2).to(in_dtype)
