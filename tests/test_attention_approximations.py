"""The efficient attention variants against float64 references and their exact limits."""

from __future__ import annotations

import math

import pytest
import torch

from attention_cases import SEEDS, TESTED_ELSEWHERE, TINY, build, masked_softmax, rand_qkv
from lra_bench.attention import available
from lra_bench.attention.pinv import newton_schulz_pinv
from lra_bench.attention.softmax import softmax_reference

# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(set(available()) - set(TESTED_ELSEWHERE)))
def test_gradients_match_finite_differences(name):
    q, k, v = (x.requires_grad_() for x in rand_qkv(13, b=2, n=22, d=4))
    mask = torch.ones(2, 22, dtype=torch.bool)
    mask[1, 15:] = False
    attn = build(name, max_len=32, head_dim=4, **TINY[name])
    names = [n for n, _ in attn.named_parameters()]

    def run(q, k, v, *params):
        return torch.func.functional_call(
            attn, dict(zip(names, params, strict=True)), (q, k, v, mask)
        )

    params = [p.detach().requires_grad_() for p in attn.parameters()]
    assert torch.autograd.gradcheck(run, (q, k, v, *params), fast_mode=True)


# ---------------------------------------------------------------- kernelized


@pytest.mark.parametrize("seed", SEEDS)
def test_kernelized_is_the_closed_form_gaussian_kernel(seed):
    q, k, v = rand_qkv(seed, n=40, d=16)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    c = torch.exp(-(torch.cdist(q, k) ** 2) / (2 * math.sqrt(16))) * mask[:, None, None, :]
    out = build("kernelized", head_dim=16)(q, k, v, mask)
    torch.testing.assert_close(out, c @ v, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- nystromformer


def nystrom_reference(q, k, v, m, iters):
    """Segment means over [floor(j n / m), ...) by an
    explicit loop, then the three softmax factors."""
    n, d = q.shape[2], q.shape[3]
    seg = torch.tensor([i * m // n for i in range(n)])
    q_l = torch.stack([q[:, :, seg == j].mean(2) for j in range(m)], dim=2)
    k_l = torch.stack([k[:, :, seg == j].mean(2) for j in range(m)], dim=2)
    s = d**-0.5
    k1 = torch.softmax(q @ k_l.transpose(-1, -2) * s, -1)
    k2 = torch.softmax(q_l @ k_l.transpose(-1, -2) * s, -1)
    k3 = torch.softmax(q_l @ k.transpose(-1, -2) * s, -1)
    return k1 @ newton_schulz_pinv(k2, iters) @ k3 @ v


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [96, 100])
def test_nystromformer_matches_reference(seed, n):
    q, k, v = rand_qkv(seed, n=n)
    out = build("nystromformer", num_landmarks=16, conv_kernel=0)(q, k, v)
    torch.testing.assert_close(out, nystrom_reference(q, k, v, 16, 6))


@pytest.mark.parametrize("seed", SEEDS)
def test_nystromformer_with_every_token_a_landmark_is_softmax(seed):
    q, k, v = rand_qkv(seed, n=48, d=8, scale=1.5)
    k = q + 0.3 * k  # a well-conditioned softmax matrix, so 6..60 Newton-Schulz steps converge
    out = build("nystromformer", num_landmarks=48, conv_kernel=0, pinv_iters=60)(q, k, v)
    torch.testing.assert_close(out, softmax_reference(q, k, v), rtol=1e-7, atol=1e-9)


def test_nystromformer_more_landmarks_than_tokens_uses_each_token_once():
    q, k, v = rand_qkv(5, n=20, scale=1.5)
    k = q + 0.3 * k
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 12:] = False  # 12 real tokens for 32 landmarks: 20 empty segments are masked out
    out = build("nystromformer", num_landmarks=32, conv_kernel=0, pinv_iters=60)(q, k, v, mask)
    ref = softmax_reference(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-7, atol=1e-9)


def test_nystromformer_conv_sees_no_padding():
    q, k, v = rand_qkv(6, n=40)
    attn = build("nystromformer", num_landmarks=8, conv_kernel=35)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[:, 30:] = False
    v_loud = v.clone()
    v_loud[:, :, 30:] = 1e3
    torch.testing.assert_close(attn(q, k, v, mask)[:, :, :30], attn(q, k, v_loud, mask)[:, :, :30])


# ---------------------------------------------------------------- linformer


@pytest.mark.parametrize("seed", SEEDS)
def test_linformer_with_identity_projections_is_softmax(seed):
    n = 64
    q, k, v = rand_qkv(seed, n=n)
    attn = build("linformer", max_len=n, proj_dim=n)
    with torch.no_grad():
        attn.proj_k.copy_(torch.eye(n))
        attn.proj_v.copy_(torch.eye(n))
    torch.testing.assert_close(attn(q, k, v), softmax_reference(q, k, v))


def test_linformer_projects_only_real_keys_with_the_first_columns():
    q, k, v = rand_qkv(7, n=30)
    attn = build("linformer", max_len=64, proj_dim=8)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 20:] = False
    keep = mask[:, None, :, None].double()
    e, f = attn.proj_k[:, :30], attn.proj_v[:, :30]
    ref = torch.softmax(q @ (e @ (k * keep)).transpose(-1, -2) / math.sqrt(8), -1) @ (
        f @ (v * keep)
    )
    torch.testing.assert_close(attn(q, k, v, mask), ref)
    assert {name for name, _ in attn.named_parameters()} == {"proj_k", "proj_v"}


# ---------------------------------------------------------------- performer


def test_performer_error_falls_as_features_grow():
    errors = {}
    for m in (16, 256, 2048):
        errs = []
        for seed in range(4):
            q, k, v = rand_qkv(
                seed, n=64, d=8, scale=0.4
            )  # small norms: the estimator's variance grows as exp|q + k|^2
            attn = build("performer", num_features=m, seed=seed)
            ref = softmax_reference(q, k, v)
            errs.append(float((attn(q, k, v) - ref).norm() / ref.norm()))
        errors[m] = sum(errs) / len(errs)
    assert errors[16] > errors[256] > errors[2048], errors
    assert errors[2048] < 0.05, errors


def test_performer_matches_favor_formula_with_pinned_features():
    q, k, v = rand_qkv(8, n=50, d=8)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 35:] = False
    w = torch.randn(24, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    attn = build("performer", num_features=24, eps=0.0)
    attn.draw_features = lambda d, device=None: w

    def phi(x):
        x = x * 8**-0.25
        return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(24)

    a = phi(q) @ phi(k).transpose(-1, -2) * mask[:, None, None, :]
    ref = (a @ v) / a.sum(-1, keepdim=True)
    torch.testing.assert_close(attn(q, k, v, mask), ref)  # the max shifts cancel exactly
    attn.cfg.eps = 1e-6  # the paper code's stabiliser: a small bias
    assert (attn(q, k, v, mask) - ref).norm() / ref.norm() < 1e-2


def test_performer_features_are_orthogonal_blocks():
    from lra_bench.attention.performer import gaussian_orthogonal

    w = gaussian_orthogonal(16, 8, torch.Generator().manual_seed(0))
    for block in (w[:8], w[8:]):
        unit = block / block.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, torch.eye(8, dtype=torch.float64))


def test_performer_fixed_redraw_uses_the_eval_features_in_training():
    q, k, v = rand_qkv(9, n=32)
    attn = build("performer", num_features=16, redraw="fixed")
    ref = attn(q, k, v)
    attn.train()
    torch.testing.assert_close(attn(q, k, v), ref)


# ---------------------------------------------------------------- reformer


def shared_qk_scores(q):
    return q @ torch.nn.functional.normalize(q, dim=-1).transpose(-1, -2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("buckets", [0, 1])
def test_reformer_with_one_chunk_is_softmax_without_self(seed, buckets):
    n = 64
    q, _, v = rand_qkv(seed, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 40:] = False
    attn = build("reformer", max_len=n, chunk_size=n, num_buckets=buckets)
    allowed = ~torch.eye(n, dtype=torch.bool) & mask[:, None, None, :]
    ref = masked_softmax(shared_qk_scores(q), allowed, v)
    out = attn(q, torch.zeros_like(q), v, mask)
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], ref[keep])


def test_reformer_query_attends_to_itself_only_when_alone():
    q, _, v = rand_qkv(10, n=8)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 0] = True
    out = build("reformer", max_len=8, chunk_size=8)(q, q, v, mask)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


@pytest.mark.parametrize("wrap", [True, False])
def test_reformer_chunks_see_their_own_and_previous_chunk(wrap):
    n, c = 64, 16
    q, _, v = rand_qkv(11, n=n)
    attn = build(
        "reformer", max_len=n, chunk_size=c, num_buckets=1, num_hashes=1, wrap=wrap
    )  # sorted order = positions
    chunk = torch.arange(n) // c
    diff = chunk[:, None] - chunk[None, :]
    wrapped = (
        (chunk[:, None] == 0) & (chunk[None, :] == n // c - 1) & wrap
    )  # the first chunk sees the last
    allowed = ((diff == 0) | (diff == 1) | wrapped) & ~torch.eye(n, dtype=torch.bool)
    torch.testing.assert_close(attn(q, q, v), masked_softmax(shared_qk_scores(q), allowed, v))


@pytest.mark.parametrize("same_bucket_only", [False, True])
def test_reformer_rounds_combine_by_log_sum_exp(same_bucket_only):
    n, c = 64, 16
    q, _, v = rand_qkv(12, n=n)
    attn = build(
        "reformer", max_len=n, chunk_size=c, num_hashes=2, same_bucket_only=same_bucket_only
    )
    rot = torch.randn(2, 8, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    attn.draw_rotations = lambda heads, d, device=None: rot
    scores = shared_qk_scores(q)
    outs, lses = [], []
    for r in range(2):  # one round at a time, by brute force over sorted positions
        proj = torch.einsum("bhnd,hdk->bhnk", q, rot[:, :, r])
        bucket = torch.cat([proj, -proj], -1).argmax(-1)
        rank = (bucket * n + torch.arange(n)).argsort(-1).argsort(-1)  # sorted slot of each token
        ch = rank // c
        diff = ch.unsqueeze(-1) - ch.unsqueeze(-2)
        allowed = (
            (diff == 0) | (diff == 1) | ((ch.unsqueeze(-1) == 0) & (ch.unsqueeze(-2) == n // c - 1))
        )  # wrap
        if same_bucket_only:
            allowed = allowed & (bucket.unsqueeze(-1) == bucket.unsqueeze(-2))
        eye = torch.eye(
            n, dtype=torch.bool
        )  # itself at -1e5: chosen only when alone, and then weighs ~0
        s = scores.masked_fill(~allowed, -math.inf).masked_fill(eye, -1e5)
        outs.append(torch.softmax(s, -1) @ v)
        lses.append(s.logsumexp(-1, keepdim=True))
    w = torch.softmax(torch.stack(lses), dim=0)
    ref = (w * torch.stack(outs)).sum(0)
    torch.testing.assert_close(attn(q, q, v), ref)


# ---------------------------------------------------------------- bigbird


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [50, 128, 192])
def test_bigbird_with_blocks_covering_the_sequence_is_softmax(seed, n):
    q, k, v = rand_qkv(seed, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 20 :] = False
    out = build("bigbird", block_size=64)(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], softmax_reference(q, k, v, mask)[keep])


@pytest.mark.parametrize("seed", SEEDS)
def test_bigbird_matches_dense_masked_reference_with_pinned_blocks(seed):
    n, bs, nb = 160, 16, 10
    q, k, v = rand_qkv(seed, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 120:] = False  # 8 real blocks in the second sequence
    attn = build("bigbird", block_size=bs, num_random_blocks=2)
    rand = attn.draw_random_blocks(torch.tensor([10, 8]), nb, 2)
    attn.draw_random_blocks = lambda *_: rand
    allowed = torch.zeros(2, 2, nb, nb, dtype=torch.bool)
    for b, real in enumerate((10, 8)):
        for i in range(nb):
            if i in (0, real - 1):
                allowed[b, :, i, :] = True
                continue
            for j in (0, real - 1, max(i - 1, 0), min(i, real - 1), min(i + 1, real - 1)):
                allowed[b, :, i, j] = True
            for h in range(2):
                for j in rand[b, h, i].tolist():
                    assert j == -1 or (j < real and abs(j - i) > 1 and j not in (0, real - 1))
                    if j >= 0:
                        allowed[b, h, i, j] = True
    allowed = allowed.repeat_interleave(bs, -1).repeat_interleave(bs, -2) & mask[:, None, None, :]
    ref = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(8), allowed, v)
    out = attn(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], ref[keep])


def test_bigbird_random_blocks_are_distinct_and_outside_window():
    attn = build("bigbird", block_size=16, num_random_blocks=3, max_len=1024)
    rand = attn.draw_random_blocks(torch.tensor([64, 5]), 64, 2)
    assert rand.shape == (2, 2, 64, 3)
    full = rand[0]
    assert bool((full >= 0).all())
    assert bool((full.sort(-1).values.diff(dim=-1) > 0).all())  # without replacement
    assert (
        rand[1, :, 2].eq(-1).all()
    )  # 5 blocks: block 2 has no block left outside window and globals


# ---------------------------------------------------------------- informer


@pytest.mark.parametrize("seed", SEEDS)
def test_informer_with_all_queries_selected_is_softmax(seed):
    n = 64
    q, k, v = rand_qkv(seed, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 50:] = False
    out = build("informer", factor=100)(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], softmax_reference(q, k, v, mask)[keep])


@pytest.mark.parametrize("seed", SEEDS)
def test_informer_selects_sparsest_queries_and_gives_the_rest_mean_v(seed):
    n, factor = 90, 2
    q, k, v = rand_qkv(seed, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 60:] = False
    attn = build("informer", factor=factor)
    lengths = mask.sum(-1)
    samples = attn.draw_key_samples(lengths, n, 2)
    attn.draw_key_samples = lambda lengths_, n_, heads: samples
    out = attn(q, k, v, mask)
    full = softmax_reference(q, k, v, mask)
    for b, length in enumerate(lengths.tolist()):
        u = factor * math.ceil(math.log(length))
        assert bool((samples[b] < length).all())
        s = torch.einsum(
            "hnd,hnud->hnu", q[b], k[b][torch.arange(2)[:, None, None], samples[b, :, :, :u]]
        ) / math.sqrt(8)
        sparsity = (s.max(-1).values - s.mean(-1))[:, :length]
        v_mean = v[b, :, :length].mean(1, keepdim=True)
        for h in range(2):
            top = set(sparsity[h].topk(u).indices.tolist())
            ref = torch.stack([full[b, h, i] if i in top else v_mean[h, 0] for i in range(length)])
            torch.testing.assert_close(out[b, h, :length], ref)
