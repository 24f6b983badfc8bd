"""Performer / FAVOR+ (Choromanski et al., 2021, arXiv 2009.14794): softmax attention by random features.

phi(x) = exp(W x - ||x||^2 / 2) / sqrt(m) on x = q / d^(1/4), with m positive orthogonal
random features W (Gaussian rows made orthogonal in blocks of d, rescaled by chi-distributed
norms), so that E[phi(q) . phi(k)] = exp(q.k / sqrt d). out = D^-1 phi(Q) (phi(K)^T V) with
D = diag(phi(Q) phi(K)^T 1): row-normalised linear attention, cost O(n m d).

Stabilised as the paper's code: each query row subtracts its own max exponent, the keys
one max over the valid keys of each (sequence, head); both cancel in the normalisation.
``eps`` (the paper code's 1e-6) added to every feature keeps the normaliser positive; it
biases the estimate slightly towards uniform attention (0 removes it). Padded keys are
left out of both sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lra_bench.attention.base import AttentionConfig, SampledAttention
from lra_bench.attention.registry import register_attention
from lra_bench.attention.sampling import seeded_generator


@dataclass
class PerformerConfig(AttentionConfig):
    name: str = "performer"
    dropout: float = 0.0
    num_features: int = 128
    orthogonal: bool = True  # orthogonal blocks (FAVOR+) | false: i.i.d. Gaussian rows
    redraw: str = "fresh"  # fresh: new features every training forward | fixed: always the seeded eval draw
    eps: float = 1e-6  # added to every feature after the max shift (numerical stabiliser of the paper's code)

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if self.dropout != 0.0:
            raise ValueError(f"dropout: performer has no attention weights to drop, must be 0, got {self.dropout}")
        if self.num_features < 1:
            raise ValueError(f"num_features: must be >= 1, got {self.num_features}")
        if self.redraw not in ("fresh", "fixed"):
            raise ValueError(f"redraw: choose fresh or fixed, got {self.redraw!r}")
        if self.eps < 0:
            raise ValueError(f"eps: must be >= 0, got {self.eps}")


def gaussian_orthogonal(m: int, d: int, generator: torch.Generator, orthogonal: bool = True) -> torch.Tensor:
    """``[m, d]`` random features (float64, on the generator's device): orthogonal blocks of d rows with chi(d) norms."""
    device = generator.device
    if not orthogonal:
        return torch.randn(m, d, generator=generator, dtype=torch.float64, device=device)
    blocks = math.ceil(m / d)
    gauss = torch.randn(blocks, d, d, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-uniform rotation
    rows = q.transpose(-1, -2).reshape(blocks * d, d)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64, device=device).norm(dim=-1, keepdim=True)
    return rows * norms


@register_attention("performer", PerformerConfig)
class PerformerAttention(SampledAttention):
    cfg: PerformerConfig

    def draw_features(self, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The random feature matrix W ``[m, d]`` (float64, on ``device``), shared by heads and batch.

        Tests may replace this method to pin the features.
        """
        if self.training and self.cfg.redraw == "fixed":  # the eval draw, in training too
            g = seeded_generator(self.cfg.seed, device)
        else:
            g = self.generator(device)
        return gaussian_orthogonal(self.cfg.num_features, d, g, self.cfg.orthogonal)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        in_dtype = q.dtype
        if in_dtype in (torch.float16, torch.bfloat16):  # exponentials of projections: fp32
            q, k, v = q.float(), k.float(), v.float()
        d = q.shape[-1]
        w = self.draw_features(d, device=q.device).to(device=q.device, dtype=q.dtype) * d**-0.25  # acts on x = q / d^(1/4)
        # phi(x) = exp(w.x - |x|^2/2 - shift) / sqrt(m); per-query and per-(sequence, head) shifts and
        # the 1/sqrt(m) cancel between numerator and denominator, so only the key's |x|^2/2 is kept
        qw = q @ w.T  # [b, h, n, m]
        phi_q = torch.exp(qw - qw.detach().amax(dim=-1, keepdim=True))
        kw = k @ w.T
        half_sq = 0.5 * d**-0.5 * (k * k).sum(-1, keepdim=True)  # |x|^2 / 2 for x = k / d^(1/4)
        row_max = kw.detach().amax(dim=-1, keepdim=True) - half_sq.detach()  # [b, h, n, 1]
        if mask is not None:
            row_max = row_max.masked_fill(~mask[:, None, :, None], -math.inf)
        k_max = row_max.amax(dim=-2, keepdim=True).nan_to_num(neginf=0.0)  # max over valid keys (0 if none)
        shift = half_sq + k_max
        if mask is not None:  # exp(-inf) = 0: a padded key can neither overflow nor count
            shift = shift.masked_fill(~mask[:, None, :, None], math.inf)
        phi_k = torch.exp(kw - shift)
        if self.cfg.eps > 0:
            phi_q, phi_k = phi_q + self.cfg.eps, phi_k + self.cfg.eps
        ones = torch.ones_like(v[..., :1])
        v_ext = torch.cat([v, ones], dim=-1)  # the last column accumulates the normaliser
        if mask is not None:
            v_ext = v_ext * mask[:, None, :, None].to(v.dtype)  # padded keys contribute nothing
        out = phi_q @ (phi_k.transpose(-1, -2) @ v_ext)  # [b, h, n, d + 1]
        return (out[..., :-1] / out[..., -1:]).to(in_dtype)
