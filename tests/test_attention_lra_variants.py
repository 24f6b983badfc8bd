"""The LRA paper's other variants against float64 references and their exact limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_cases import SEEDS, TINY, build, masked_softmax, rand_qkv
from lra_bench.attention.sinkhorn import log_sinkhorn
from lra_bench.attention.softmax import softmax_reference

ZOO = ["linear", "local", "longformer", "sparse", "sinkhorn", "synthesizer"]
# small settings so that the block structure is exercised at n ~ 100


def padded_mask(b: int, n: int, length: int) -> torch.Tensor:
    """All real, except the second sequence, real up to ``length``."""
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, length:] = False
    return mask


def assert_real_close(
    out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, **kw: float
) -> None:
    keep = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], ref[keep], **kw)


def scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


# ---------------------------------------------------------------- padding, gradients, precision


@pytest.mark.parametrize("name", ZOO)
def test_a_single_token_returns_its_value(name):
    q, k, v = rand_qkv(14, n=1)
    torch.testing.assert_close(build(name, **TINY[name])(q, k, v), v)


# ---------------------------------------------------------------- linear


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_linear_is_its_quadratic_form(seed, eps):
    q, k, v = rand_qkv(seed, n=60)
    mask = padded_mask(2, 60, 41)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    a = phi_q @ phi_k.transpose(-1, -2) * mask[:, None, None, :]  # padded keys contribute nothing
    ref = (a @ v) / (a.sum(-1, keepdim=True) + eps)
    torch.testing.assert_close(build("linear", eps=eps)(q, k, v, mask), ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- local


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("block", [1, 7, 16, 64])
def test_local_matches_dense_block_mask(seed, block):
    n = 100  # not a multiple of 7, 16, 64: the last block is padded internally
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, 45)
    i = torch.arange(n)
    allowed = (i[:, None] // block == i[None, :] // block) & mask[:, None, None, :]
    out = build("local", block_size=block)(q, k, v, mask)
    assert_real_close(out, masked_softmax(scores(q, k), allowed, v), mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [50, 64])
def test_local_with_a_block_covering_the_sequence_is_softmax(seed, n):
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, n - 13)
    out = build("local", block_size=64)(q, k, v, mask)
    assert_real_close(out, softmax_reference(q, k, v, mask), mask)


# ---------------------------------------------------------------- longformer


def longformer_allowed(n: int, window: int, mask: torch.Tensor) -> torch.Tensor:
    i = torch.arange(n)
    band = (i[:, None] - i[None, :]).abs() <= window
    glob = (i[:, None] == 0) | (i[None, :] == 0)  # the first token sees and is seen by every token
    return (band | glob) & mask[:, None, None, :]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("window", [0, 1, 5, 16, 40])
def test_longformer_matches_dense_band_plus_global_mask(seed, window):
    n = 100
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, 63)
    out = build("longformer", window=window)(q, k, v, mask)
    assert_real_close(
        out, masked_softmax(scores(q, k), longformer_allowed(n, window, mask), v), mask
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, window", [(64, 63), (64, 64), (50, 200)])
def test_longformer_with_a_window_covering_the_sequence_is_softmax(seed, n, window):
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, n - 9)
    out = build("longformer", window=window)(q, k, v, mask)
    assert_real_close(out, softmax_reference(q, k, v, mask), mask)


def test_longformer_first_token_padded_is_hidden_everywhere():
    n = 40
    q, k, v = rand_qkv(15, n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[:, 0] = False  # a padded first token reaches nobody through the global column
    out = build("longformer", window=4)(q, k, v, mask)
    assert_real_close(out, masked_softmax(scores(q, k), longformer_allowed(n, 4, mask), v), mask)


# ---------------------------------------------------------------- sparse


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stride, summary", [(16, 4), (7, 3), (10, 10), (32, 1)])
def test_sparse_matches_dense_fixed_pattern(seed, stride, summary):
    n = 100
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, 58)
    i = torch.arange(n)
    own_block = i[:, None] // stride == i[None, :] // stride
    summary_key = (i[None, :] % stride >= stride - summary).expand(n, n)
    allowed = (own_block | summary_key) & mask[:, None, None, :]
    out = build("sparse", stride=stride, summary=summary)(q, k, v, mask)
    assert_real_close(out, masked_softmax(scores(q, k), allowed, v), mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, stride", [(64, 64), (50, 128)])
def test_sparse_with_stride_covering_the_sequence_is_softmax(seed, n, stride):
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, n - 11)
    out = build("sparse", stride=stride, summary=min(32, stride))(q, k, v, mask)
    assert_real_close(out, softmax_reference(q, k, v, mask), mask)


def test_sparse_without_summaries_is_local():
    q, k, v = rand_qkv(16, n=90)
    mask = padded_mask(2, 90, 66)
    out = build("sparse", stride=16, summary=0)(q, k, v, mask)
    assert_real_close(out, build("local", block_size=16)(q, k, v, mask), mask)


# ---------------------------------------------------------------- sinkhorn


def sinkhorn_reference(attn, q, k, v, mask):
    """Block by block, slot by slot, over the real tokens of each (sequence, head); prefix masks."""
    bs, iters, temp = attn.cfg.block_size, attn.cfg.sinkhorn_iters, attn.cfg.temperature
    w, c = attn.sort_net.weight, attn.sort_net.bias
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        length = int(mask[b].sum())
        blocks = [(s, min(s + bs, length)) for s in range(0, length, bs)]
        for h in range(q.shape[1]):
            kk, vv, qq = k[b, h], v[b, h], q[b, h] / math.sqrt(q.shape[-1])
            emb = torch.stack([kk[s:e].sum(0) for s, e in blocks])
            log_alpha = (emb @ w[: len(blocks)].T + c[: len(blocks)]) / temp
            for _ in range(iters):
                log_alpha = log_alpha - log_alpha.logsumexp(1, keepdim=True)
                log_alpha = log_alpha - log_alpha.logsumexp(0, keepdim=True)
            perm = log_alpha.exp()
            for i, (s, e) in enumerate(blocks):
                keys, values = list(kk[s:e]), list(vv[s:e])
                for t in range(bs):  # sorted slot t mixes slot t of every block that has one
                    src = [j for j, (s2, e2) in enumerate(blocks) if s2 + t < e2]
                    if src:
                        keys.append(sum(perm[i, j] * kk[blocks[j][0] + t] for j in src))
                        values.append(sum(perm[i, j] * vv[blocks[j][0] + t] for j in src))
                weights = torch.softmax(qq[s:e] @ torch.stack(keys).T, dim=-1)
                out[b, h, s:e] = weights @ torch.stack(values)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_sinkhorn_matches_explicit_reference(seed):
    n = 100
    q, k, v = rand_qkv(seed, n=n, scale=0.5)
    mask = padded_mask(2, n, 70)
    attn = build("sinkhorn", block_size=16, sinkhorn_iters=4, temperature=0.8)
    with torch.no_grad():  # larger sorting weights: a far-from-uniform permutation
        attn.sort_net.weight.mul_(3.0)
    assert_real_close(attn(q, k, v, mask), sinkhorn_reference(attn, q, k, v, mask), mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [50, 64])
def test_sinkhorn_with_one_block_is_softmax(seed, n):
    # one block: P = [[1]], so the block attends to its keys twice, which leaves softmax unchanged
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, n - 7)
    out = build("sinkhorn", block_size=64)(q, k, v, mask)
    assert_real_close(out, softmax_reference(q, k, v, mask), mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_sinkhorn_with_identity_sorting_is_local(seed):
    q, k, v = rand_qkv(seed, n=100)
    mask = padded_mask(2, 100, 55)
    attn = build("sinkhorn", block_size=16)
    attn.sort_matrix = lambda logits, real: torch.eye(
        logits.shape[-1], dtype=logits.dtype
    ).expand_as(logits)
    assert_real_close(attn(q, k, v, mask), build("local", block_size=16)(q, k, v, mask), mask)


def test_sinkhorn_sorting_is_doubly_stochastic_over_real_blocks():
    logits = torch.randn(
        2, 2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    attn = build("sinkhorn", block_size=16, sinkhorn_iters=500)
    perm = attn.sort_matrix(logits, real)
    torch.testing.assert_close(perm[0].sum(-1), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(perm[0].sum(-2), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(perm[1, :, :4, :4].sum(-1), torch.ones(2, 4, dtype=torch.float64))
    assert (
        perm[1, :, :4, 4:].eq(0).all() and perm[1, :, 4:, :4].eq(0).all()
    )  # real and padding never mix
    exact = log_sinkhorn(logits[0] / attn.cfg.temperature, 500).exp()
    torch.testing.assert_close(perm[0], exact)


def test_sinkhorn_sorting_network_is_a_registered_parameter():
    attn = build("sinkhorn", block_size=16, max_len=100)
    assert {name for name, _ in attn.named_parameters()} == {"sort_net.weight", "sort_net.bias"}
    assert attn.sort_net.weight.shape == (7, 8)  # ceil(100 / 16) blocks, head dim 8


# ---------------------------------------------------------------- synthesizer


@pytest.mark.parametrize("seed", SEEDS)
def test_synthesizer_matches_formula(seed):
    n = 60
    q, k, v = rand_qkv(seed, n=n)
    mask = padded_mask(2, n, 37)
    attn = build("synthesizer", max_len=128)
    w1, b1 = attn.hidden.weight, attn.hidden.bias
    w2, b2 = attn.to_logits.weight, attn.to_logits.bias
    hid = torch.relu(torch.einsum("bhnd,ed->bhne", q, w1) + b1)
    logits = torch.einsum("bhne,me->bhnm", hid, w2[:n]) + b2[:n]  # the first n of max_len positions
    ref = masked_softmax(logits, mask[:, None, None, :].expand(-1, 2, n, -1), v)
    out = attn(q, k, v, mask)
    assert_real_close(out, ref, mask)
    torch.testing.assert_close(attn(q, torch.randn_like(k), v, mask), out)  # keys are not used
    assert {name for name, _ in attn.named_parameters()} == {
        "hidden.weight",
        "hidden.bias",
        "to_logits.weight",
        "to_logits.bias",
    }


@pytest.mark.parametrize("name", ["synthesizer", "sinkhorn"])
def test_learned_variants_refuse_sequences_longer_than_max_len(name):
    q, k, v = rand_qkv(17, n=40)
    with pytest.raises(ValueError, match="exceeds the max_len"):
        build(name, max_len=32, **TINY[name])(q, k, v)


def test_sinkhorn_mean_pooling_ignores_padding_in_the_count():
    n = 40
    q, k, v = rand_qkv(18, n=n)
    mask = padded_mask(2, n, 27)  # the second sequence's last real block holds 3 of 8 real keys
    attn = build("sinkhorn", block_size=8, pool="mean")
    captured = {}
    sort_matrix = attn.sort_matrix

    def spy(logits, real):
        captured["logits"] = logits
        return sort_matrix(logits, real)

    attn.sort_matrix = spy
    attn(q, k, v, mask)
    emb = k[1, :, 24:27].mean(1)  # [h, d]
    expected = emb @ attn.sort_net.weight[:5].T + attn.sort_net.bias[:5]
    torch.testing.assert_close(captured["logits"][1, :, 3], expected)
