"""Performer / FAVOR+ (Choromanski et al., 2021, arXiv 2009.14794): softmax attention by random
features.

phi(x) = exp(W x - ||x||^2 / 2) / sqrt(m) on x = q / d^(1/4), with m positive orthogonal
random features W (Gaussian rows made orthogonal in blocks of d, rescaled by chi-distributed
norms), so that E[phi(q) . phi(k)] = exp(q.k / sqrt d). out = D^-1 phi(Q) (phi(K)^T V) with
D = diag(phi(Q) phi(K)^T 1): row-normalised linear attention, cost O(n m d).

Stabilised as the paper's code: each query row subtracts its own max exponent, the keys
one max over the valid keys of each (sequence, head); both cancel in the normalisation.
``eps`` (the paper code's 1e-6) added to every feature keeps the normaliser positive; it
biases the estimate slightly towards uniform attention (0 removes it). Padded keys are
left out of both sums.

Settings that reproduce the code behind the Skyformer paper's Performer row (pkuzengqi/Skyformer,
``attention_performer.py``), each off by default:

- ``score_scale: inv_d``: q and k are scaled by d^-1/4 twice (once by the caller, once inside
  the feature map), so the estimate is of softmax(q k^T / d), not / sqrt d;
- ``padded_keys: zeroed``: padded keys and values are zeroed, not removed, so every padded key
  still adds phi(0) to the normaliser;
- ``stabilizer: global``: the keys' shift is one max of k.w over the whole batch (not per
  sequence and head, and without the norm term), and the query features keep their norm term
  exp(-|x|^2 / 2) (which otherwise cancels); both matter only through ``eps``;
- ``redraw: fixed`` and ``eps: 1e-4``: features drawn once, the code's stabiliser.
- ``qr_uniform: false``: each orthogonal block is torch's QR factor without the sign
  correction (the code's ``qr_uniform_q=False``), so the rows' directions are not uniform.

``impl=fast`` (default) builds phi(Q) and phi(K) chunk by chunk, uses them at once and rebuilds
them in backward (``chunked.py``): no n x m feature map is kept. ``impl=reference`` is the plain
form (the float64 reference in tests).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lra_bench.attention.base import SampledAttention, backward_without_autocast, upcast
from lra_bench.attention.chunked import kernel_apply, kernel_reduce, row_max
from lra_bench.attention.sampling import seeded_generator
from lra_bench.attention.settings.performer import PerformerConfig


def gaussian_orthogonal(
    m: int, d: int, generator: torch.Generator, orthogonal: bool = True, uniform: bool = True
) -> torch.Tensor:
    """``[m, d]`` random features (float64, on the generator's device): orthogonal blocks of d
    rows with chi(d) norms; ``uniform``: each block's QR factor sign-corrected."""
    device = generator.device
    if not orthogonal:
        return torch.randn(m, d, generator=generator, dtype=torch.float64, device=device)
    blocks = math.ceil(m / d)
    gauss = torch.randn(blocks, d, d, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(gauss)
    if uniform:  # Haar-uniform rotation
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    rows = q.transpose(-1, -2).reshape(blocks * d, d)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64, device=device).norm(
        dim=-1, keepdim=True
    )
    return rows * norms


class _DivideByLast(torch.autograd.Function):
    """``a[..., :-1] / a[..., -1:]`` (the output divided by its normaliser) with one buffer the
    size of ``a`` for the gradient, where autograd's two slices and division make four."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a)
        return a[..., :-1] / a[..., -1:]

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        den = a[..., -1:]
        out = torch.empty_like(a)
        grad_num = torch.div(grad, den, out=out[..., :-1])
        torch.sum(
            grad_num * a[..., :-1], dim=-1, keepdim=True, out=out[..., -1:]
        )  # d/d den of num / den
        out[..., -1:].div_(den).neg_()
        return out


class PerformerAttention(SampledAttention):
    cfg: PerformerConfig

    def draw_features(self, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The random feature matrix W ``[m, d]`` (float64, on ``device``), shared by heads and
        batch.

        Tests may replace this method to pin the features.
        """
        if self.training and self.cfg.redraw == "fixed":  # the eval draw, in training too
            g = seeded_generator(self.cfg.seed, device)
        else:
            g = self.generator(device)
        cfg = self.cfg
        return gaussian_orthogonal(cfg.num_features, d, g, cfg.orthogonal, cfg.qr_uniform)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)  # exponentials of projections: fp32
        d = q.shape[-1]
        scale = (
            d**-0.25 if self.cfg.score_scale == "inv_sqrt_d" else d**-0.5
        )  # features act on x = scale * q
        w = self.draw_features(d, device=q.device).to(dtype=q.dtype)
        ones = torch.ones_like(v[..., :1])
        if (
            mask is not None and self.cfg.padded_keys == "zeroed"
        ):  # padded keys become zero vectors that still count
            keep = mask[:, None, :, None].to(k.dtype)
            k, v, mask = k * keep, v * keep, None
        v_ext = torch.cat([v, ones], dim=-1)  # the last column accumulates the normaliser
        run = self.reference if self.cfg.impl == "reference" else self.fast
        out = run(q, k, v_ext, mask, w, scale)  # [b, h, n, d + 1]
        if self.cfg.impl == "reference":
            return (out[..., :-1] / out[..., -1:]).to(in_dtype)
        return _DivideByLast.apply(out).to(in_dtype)

    def fast(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v_ext: torch.Tensor,
        mask: torch.Tensor | None,
        w: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """phi(Q) (phi(K)^T [V, 1]) with both feature maps built per chunk (see ``chunked.py``)."""
        zero, one = torch.zeros_like(w[:, :1]), torch.ones_like(w[:, :1])
        glob = self.cfg.stabilizer == "global"
        w_plain, w_norm = (
            torch.cat([w, zero, zero], dim=-1),
            torch.cat([w, one, zero], dim=-1),
        )  # x~ . w~ = s x.w (- |s x|^2/2)
        if glob:
            q_shift: torch.Tensor | str = row_max(q, w_plain, scale=scale)
            k_shift = self.masked_max(row_max(k, w_plain, scale=scale), mask, dims=(0, 1, 2))
        else:
            q_shift = "row_max"
            k_shift = self.masked_max(row_max(k, w_norm, scale=scale), mask, dims=(2,))
        kv = kernel_reduce(
            k, w_norm, v_ext, mask, scale=scale, shift=k_shift, eps=self.cfg.eps
        )  # [b, h, m, d + 1]
        return kernel_apply(
            q, w_norm if glob else w_plain, kv, scale=scale, shift=q_shift, eps=self.cfg.eps
        )

    @staticmethod
    def masked_max(
        rows: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...]
    ) -> torch.Tensor:
        """Max of per-row maxima ``[b, h, n, 1]`` over ``dims``, real keys only (0 when there is
        none)."""
        if mask is not None:
            rows = rows.masked_fill(~mask[:, None, :, None], -math.inf)
        return rows.amax(dim=dims, keepdim=True).nan_to_num(neginf=0.0)

    def reference(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v_ext: torch.Tensor,
        mask: torch.Tensor | None,
        w: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """The feature maps materialised; the shifts cancel between numerator and normaliser (up to
        eps)."""
        w = w * scale
        qw = q @ w.T  # [b, h, n, m]
        kw = k @ w.T
        half_sq_k = 0.5 * scale**2 * (k * k).sum(-1, keepdim=True)  # |x|^2 / 2 for x = scale * k
        if (
            self.cfg.stabilizer == "global"
        ):  # the peer's: query features keep their norm term, one max of k.w
            half_sq_q = 0.5 * scale**2 * (q * q).sum(-1, keepdim=True)
            phi_q = torch.exp(qw - half_sq_q - qw.detach().amax(dim=-1, keepdim=True))
            k_max = self.masked_max(kw.detach().amax(dim=-1, keepdim=True), mask, dims=(0, 1, 2))
        else:
            phi_q = torch.exp(qw - qw.detach().amax(dim=-1, keepdim=True))
            k_max = self.masked_max(
                kw.detach().amax(dim=-1, keepdim=True) - half_sq_k.detach(), mask, dims=(2,)
            )
        shift = half_sq_k + k_max
        if mask is not None:  # exp(-inf) = 0: a padded key can neither overflow nor count
            shift = shift.masked_fill(~mask[:, None, :, None], math.inf)
        phi_k = torch.exp(kw - shift)
        if self.cfg.eps > 0:
            phi_q, phi_k = phi_q + self.cfg.eps, phi_k + self.cfg.eps
        if mask is not None:
            v_ext = v_ext * mask[:, None, :, None].to(v_ext.dtype)  # padded keys contribute nothing
        return phi_q @ (phi_k.transpose(-1, -2) @ v_ext)
