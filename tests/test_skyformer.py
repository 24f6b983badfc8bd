"""Skyformer and softmax against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from lra_bench.attention import build_attention
from lra_bench.attention.pinv import newton_schulz_pinv
from lra_bench.attention.softmax import softmax_reference

SEEDS = [0, 1, 2]


def gaussian(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(torch.cdist(x, y) ** 2) / 2)


def skyformer(**kw: object) -> torch.nn.Module:
    cfg = {"name": "skyformer", **kw}
    return build_attention(cfg, head_dim=8, num_heads=2, max_len=256).eval()


def closed_form(q, k, v, idx, gamma, mask=None):
    """k(Q,L) D^-1/2 pinv(M) D^-1/2 k(L,K) V with exact pinv, in float64."""
    d = q.shape[-1]
    q, k = q * d**-0.25, k * d**-0.25
    rows = torch.cat([q, k], dim=2)
    lm = torch.gather(rows, 2, idx.unsqueeze(-1).expand(-1, -1, -1, d))
    w = gaussian(lm, lm) + gamma * torch.eye(lm.shape[2], dtype=q.dtype)
    dm = torch.diag_embed(w.sum(-1) ** -0.5)
    m = dm @ w @ dm
    k_lk = gaussian(lm, k)
    if mask is not None:
        k_lk = k_lk * mask[:, None, None, :]
    return gaussian(q, lm) @ dm @ torch.linalg.pinv(m) @ dm @ k_lk @ v


def rand_qkv(seed: int, b=2, h=2, n=32, d=8, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_sdpa_and_math_match_reference(seed):
    q, k, v = rand_qkv(seed)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    ref = softmax_reference(q, k, v, mask)
    for impl in ("sdpa", "math"):
        attn = build_attention(
            {"name": "softmax", "impl": impl}, head_dim=8, num_heads=2, max_len=64
        ).eval()
        torch.testing.assert_close(attn(q, k, v, mask), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_skyformer_equals_closed_form_for_pinned_landmarks(seed):
    q, k, v = rand_qkv(seed)
    g = torch.Generator().manual_seed(100 + seed)
    idx = torch.randint(0, 64, (2, 2, 16), generator=g)
    attn = skyformer(num_landmarks=16, pinv_iters=40)
    attn.draw_landmarks = lambda lengths, n, heads: idx
    torch.testing.assert_close(attn(q, k, v), closed_form(q, k, v, idx, 0.1), rtol=1e-7, atol=1e-9)


def test_newton_schulz_converges_to_pinv():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 10, 10, generator=g, dtype=torch.float64)
    spd = a @ a.transpose(-1, -2) + 0.5 * torch.eye(10, dtype=torch.float64)
    spd = (
        spd / spd.abs().sum(-1).amax()
    )  # norm <= 1, as the row-normalised matrices both variants invert
    for init in ("per_matrix", "batch"):  # (the batch start needs it: ||I - M Z0|| < 1)
        torch.testing.assert_close(
            newton_schulz_pinv(spd, iters=60, init=init), torch.linalg.pinv(spd)
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_skyformer_with_all_rows_reaches_exact_gaussian_kernel(seed):
    n, d = 12, 8
    q, k, v = rand_qkv(seed, n=n, d=d, scale=0.7)
    idx = torch.arange(2 * n).expand(2, 2, -1)  # every row of [Q; K] is a landmark
    attn = skyformer(num_landmarks=2 * n, gamma=1e-9, pinv_iters=100)
    attn.draw_landmarks = lambda lengths, n_, heads: idx
    exact = gaussian(q * d**-0.25, k * d**-0.25) @ v  # kernelized attention, no normalisation
    err = (attn(q, k, v) - exact).norm() / exact.norm()
    assert err < 1e-5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("landmarks_from", ["split", "joint"])
def test_skyformer_padding_never_changes_real_tokens(seed, landmarks_from):
    q, k, v = rand_qkv(seed, n=24)
    pad = rand_qkv(seed + 50, n=40)
    padded = [torch.cat([x, 5 * p[:, :, :16]], dim=2) for x, p in zip((q, k, v), pad, strict=True)]
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[:, :24] = True
    attn = skyformer(num_landmarks=16, landmarks_from=landmarks_from)
    out_short = attn(q, k, v, torch.ones(2, 24, dtype=torch.bool))
    out_padded = attn(*padded, mask)
    torch.testing.assert_close(out_padded[:, :, :24], out_short)


def test_skyformer_landmarks_only_from_valid_tokens():
    attn = skyformer(num_landmarks=64)
    lengths = torch.tensor([3, 10])
    for source in ("split", "joint"):
        attn.cfg.landmarks_from = source
        idx = attn.draw_landmarks(lengths, 16, 2)
        pos = torch.where(idx >= 16, idx - 16, idx)
        assert bool((pos < lengths.view(-1, 1, 1)).all())
        assert bool((idx >= 16).any()) and bool((idx < 16).any())  # both Q and K rows drawn


def test_skyformer_eval_draws_repeat_and_train_draws_differ():
    q, k, v = rand_qkv(0, n=64)
    attn = skyformer(num_landmarks=8)
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v))
    attn.train()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


def test_gaussian_kernel_matches_cdist():
    from lra_bench.attention.kernels import gaussian_kernel

    x, y, _ = rand_qkv(7, n=20)
    torch.testing.assert_close(gaussian_kernel(x, y), gaussian(x, y))
    assert math.isclose(
        float(gaussian_kernel(x, x).diagonal(dim1=-2, dim2=-1).min()), 1.0, rel_tol=1e-12
    )
