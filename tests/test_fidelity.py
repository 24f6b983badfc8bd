"""Each published-code setting against a small restatement of its code's formula (float64, pinned).

The references below are written from the published code's equations, independently of the
modules: dense score matrices with the code's masks, not the blocked or sorted fast paths.
"""

from __future__ import annotations

import math

import pytest
import torch

from attention_cases import SEEDS, build, masked_softmax, rand_qkv
from lra_bench.attention import build_attention
from lra_bench.fidelity import attn_settings, relative_difference
from lra_bench.model import pool

N, D = 96, 8


def padding_mask(padded: bool, n: int = N) -> torch.Tensor | None:
    """None, or a mask whose second sequence ends at 61 real tokens."""
    if not padded:
        return None
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 61:] = False
    return mask


def real(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The outputs of real tokens (padded queries' outputs are free)."""
    return out if mask is None else out[mask[:, None, :, None].expand_as(out)]


def key_ok(mask: torch.Tensor | None, n: int = N) -> torch.Tensor:
    return torch.ones(2, 1, 1, n, dtype=torch.bool) if mask is None else mask[:, None, None, :]


# ---------------------------------------------------------------- informer (Skyformer code)


def test_informer_factor_from_features_matches_the_published_rule():
    cfg = build("informer", max_len=2048, nb_features=128).cfg
    # ceil(128 / ln n) at the padded LRA lengths: 1024 -> 19, 2048 -> 17, 4096 -> 16
    assert [cfg.effective_factor(n) for n in (1024, 2048, 4096)] == [19, 17, 16]
    assert build("informer", max_len=2048).cfg.effective_factor(2048) == 5


def informer_reference(q, k, v, idx, c):
    """ProbSparse as the published code: L = the padded length, mask unused, M = max - sum / L."""
    b, h, n, d = q.shape
    u = min(c * math.ceil(math.log(n)), n)
    s = torch.einsum("bhnd,bhnud->bhnu", q, k[:, :, idx])  # sampled scores [b, h, n, U]
    m = s.amax(-1) - s.sum(-1) / n
    top = m.topk(u, dim=-1).indices
    out = v.mean(dim=2, keepdim=True).expand(b, h, n, d).clone()
    full = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    for bi in range(b):
        for hi in range(h):
            out[bi, hi, top[bi, hi]] = full[bi, hi, top[bi, hi]]
    return out


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_informer_in_published_mode_is_the_published_formula(seed, padded):
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build("informer", max_len=128, nb_features=20, sparsity_mean="length", ignore_mask=True)
    c = attn.factor  # ceil(20 / ln 128) = 5
    u_count = c * math.ceil(math.log(128))
    idx = torch.randint(
        0, N, (N, u_count), generator=torch.Generator().manual_seed(seed)
    )  # one draw for all, as the code
    attn.draw_key_samples = lambda lengths, n, heads: idx[None, None].expand(
        len(lengths), heads, -1, -1
    )
    ref = informer_reference(q, k, v, idx[:, : c * math.ceil(math.log(N))], c)
    torch.testing.assert_close(
        attn(q, k, v, mask), ref
    )  # padding included: the code never reads the mask


def test_informer_length_mean_alone_still_respects_padding():
    q, k, v = rand_qkv(4, n=N)
    mask = padding_mask(True)
    attn = build("informer", max_len=128, factor=2, sparsity_mean="length")
    short = attn(q[:, :, :61], k[:, :, :61], v[:, :, :61])
    torch.testing.assert_close(attn(q, k, v, mask)[1, :, :61], short[1])


# ---------------------------------------------------------------- bigbird (Skyformer code)


def bigbird_reference(q, k, v, mask, bs, rand):
    """Dense mask of the published code's pattern over the padded length; rand [b, h, nb, r]."""
    b, h, n, d = q.shape
    nb = n // bs
    allowed = torch.zeros(b, h, nb, nb, dtype=torch.bool)
    for i in range(nb):
        if i in (0, nb - 1):  # global query blocks: every key
            allowed[:, :, i] = True
            continue
        for j in (0, nb - 1, i - 1, i, i + 1):
            allowed[:, :, i, j] = True
        for bi in range(b):
            for hi in range(h):
                for j in rand[bi, hi, i].tolist():
                    if j >= 0:
                        allowed[bi, hi, i, j] = True
    allowed = allowed.repeat_interleave(bs, -1).repeat_interleave(bs, -2) & key_ok(mask, n)
    return masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(d), allowed, v)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_bigbird_in_published_mode_is_the_published_pattern(seed, padded):
    bs, nb = 16, 6
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build(
        "bigbird",
        max_len=N,
        block_size=bs,
        num_random_blocks=1,
        pattern="fixed",
        last_global="padded",
    )
    rand = torch.full((2, 2, nb, 1), -1, dtype=torch.long)
    rand[:, :, 2, 0], rand[:, :, 3, 0] = 4, 1  # outside window and globals
    attn.draw_random_blocks = lambda *_: rand
    torch.testing.assert_close(
        real(attn(q, k, v, mask), mask), real(bigbird_reference(q, k, v, mask, bs, rand), mask)
    )


def test_bigbird_fixed_pattern_is_one_pattern_for_training_evaluation_and_modules():
    n = 256  # 16 blocks: room for several random choices per block
    q, k, v = rand_qkv(5, n=n)
    outs = []
    for init in (0, 1):
        torch.manual_seed(init)  # different training generators
        attn = build("bigbird", max_len=n, block_size=16, num_random_blocks=2, pattern="fixed")
        attn.train()
        outs += [attn(q, k, v), attn(q, k, v)]
        attn.eval()
        outs.append(attn(q, k, v))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])
    fresh = build("bigbird", max_len=n, block_size=16, num_random_blocks=2).train()
    assert not torch.allclose(
        fresh(q, k, v), fresh(q, k, v)
    )  # the default redraws every training call


@pytest.mark.parametrize("n, span_blocks", [(3072, 16), (2048, 32)])
def test_bigbird_random_blocks_from_the_first_1024_tokens_at_the_papers_lengths(n, span_blocks):
    attn = build(
        "bigbird",
        max_len=n,
        block_size=64,
        num_random_blocks=3,
        random_span="first_1024",
        last_global="padded",
    )
    valid = torch.ones(2, n, dtype=torch.bool)
    last, span = attn.block_limits(valid, n)
    rand = attn.draw_random_blocks(last + 1, n // 64, 2, span)
    assert int(last[0]) == n // 64 - 1
    assert int(rand.max()) < min(span_blocks, n // 64) and int(rand.max()) >= span_blocks - 4


# ---------------------------------------------------------------- linformer (Skyformer code)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_linformer_in_published_mode_is_one_fixed_projection_per_head(seed, padded):
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build(
        "linformer", max_len=128, proj_dim=16, share_kv=True, per_head=True, trainable=False
    )
    assert (
        list(attn.parameters()) == []
        and "proj_k" in attn.state_dict()
        and "proj_v" not in attn.state_dict()
    )
    e = attn.proj_k[:, :, :N]  # [heads, k, n], the pinned draw
    keep = key_ok(mask).transpose(-1, -2).to(q.dtype)  # [b, 1, n, 1]
    k_proj, v_proj = e @ (k * keep), e @ (v * keep)
    ref = torch.softmax(q @ k_proj.transpose(-1, -2) / math.sqrt(D), dim=-1) @ v_proj
    torch.testing.assert_close(attn(q, k, v, mask), ref)


# ---------------------------------------------------------------- sparse (LRA code)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stride, summary", [(16, 4), (24, 5)])
def test_sparse_in_lra_mode_is_the_causal_fixed_pattern(seed, padded, stride, summary):
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build(
        "sparse", max_len=N, stride=stride, summary=summary, causal=True, block_start_summary=True
    )
    i, j = torch.arange(N).view(-1, 1), torch.arange(N).view(1, -1)
    rem = j % stride
    pattern = (j <= i) & ((i // stride == j // stride) | (rem == 0) | (rem >= stride - summary))
    ref = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(D), pattern & key_ok(mask), v)
    torch.testing.assert_close(real(attn(q, k, v, mask), mask), real(ref, mask))


# ---------------------------------------------------------------- synthesizer (LRA code)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_synthesizer_in_lra_mode_is_random_logits_plus_the_dot_product(seed, padded):
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build("synthesizer", max_len=128, mode="random", dot_product=True)
    assert attn.uses_keys
    r = attn.random_logits[:, :N, :N]  # [heads, n, n], trained parameters at their pinned start
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + r
    ref = masked_softmax(scores, key_ok(mask).expand(2, 2, N, N), v)
    torch.testing.assert_close(real(attn(q, k, v, mask), mask), real(ref, mask))


# ---------------------------------------------------------------- longformer (LRA code)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("window", [0, 5, 16])
def test_longformer_in_lra_mode_is_a_window_without_global_token(seed, padded, window):
    q, k, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build("longformer", max_len=N, window=window, global_first=False)
    i, j = torch.arange(N).view(-1, 1), torch.arange(N).view(1, -1)
    ref = masked_softmax(
        q @ k.transpose(-1, -2) / math.sqrt(D), ((i - j).abs() <= window) & key_ok(mask), v
    )
    torch.testing.assert_close(real(attn(q, k, v, mask), mask), real(ref, mask))


# ---------------------------------------------------------------- reformer (authors', Hugging Face)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_reformer_first_chunk_wraps_to_the_last_real_chunk(seed, padded):
    c = 16
    q, _, v = rand_qkv(seed, n=N)
    mask = padding_mask(padded)
    attn = build(
        "reformer", max_len=N, chunk_size=c, num_buckets=1, num_hashes=1, wrap=True
    )  # sorted order = positions
    chunk = torch.arange(N) // c
    lengths = [N, 61 if padded else N]
    allowed = torch.zeros(2, 1, N, N, dtype=torch.bool)
    for b, length in enumerate(lengths):
        last = (length + c - 1) // c - 1
        diff = chunk[:, None] - chunk[None, :]
        allowed[b, 0] = (
            (diff == 0) | (diff == 1) | ((chunk[:, None] == 0) & (chunk[None, :] == last))
        )
    allowed &= ~torch.eye(N, dtype=torch.bool) & key_ok(mask)
    scores = q @ torch.nn.functional.normalize(q, dim=-1).transpose(-1, -2)
    ref = masked_softmax(scores, allowed, v)
    torch.testing.assert_close(real(attn(q, q, v, mask), mask), real(ref, mask))


# ---------------------------------------------------------------- pooling (Skyformer code)


@pytest.mark.parametrize("padded", [False, True])
def test_mean_padded_pooling_zeroes_padding_then_averages_over_the_padded_length(padded):
    x = torch.randn(2, N, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    mask = padding_mask(padded)
    keep = torch.ones(2, N, 1, dtype=torch.float64) if mask is None else mask.unsqueeze(-1).double()
    torch.testing.assert_close(pool(x, mask, "mean_padded"), (x * keep).sum(1) / N)
    torch.testing.assert_close(pool(x, mask, "mean"), (x * keep).sum(1) / keep.sum(1))


# ---------------------------------------------------------------- the measured-difference command


def test_relative_difference_is_zero_for_identical_settings_and_positive_for_a_quirk():
    base = attn_settings("longformer", "none") | {"window": 8}
    assert relative_difference(base, base, n=64) == 0.0
    lra = attn_settings("longformer", "lra_code") | {"window": 8}
    assert lra == base | {"global_first": False}
    assert relative_difference(base, lra, n=64, padded=True) > 0.0


@pytest.mark.parametrize(
    "name, setting, key",
    [
        ("informer", {"sparsity_mean": "median"}, "sparsity_mean"),
        ("informer", {"nb_features": -1}, "nb_features"),
        ("bigbird", {"pattern": "frozen"}, "pattern"),
        ("bigbird", {"last_global": "first"}, "last_global"),
        ("bigbird", {"random_span": "first_512"}, "random_span"),
        ("synthesizer", {"mode": "factorized"}, "mode"),
        ("reformer", {"wrap": "sometimes"}, "wrap"),
        ("reformer", {"wrap_to": "first"}, "wrap_to"),
        ("reformer", {"rounds_joined": "often"}, "rounds_joined"),
        ("reformer", {"key_norm": "l2"}, "key_norm"),
        ("bigbird", {"duplicates": "twice"}, "duplicates"),
        ("nystromformer", {"landmark_span": "all"}, "landmark_span"),
    ],
)
def test_invalid_published_code_settings_raise_naming_the_key(name, setting, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        build_attention({"name": name, **setting}, head_dim=32, num_heads=2, max_len=1024)
