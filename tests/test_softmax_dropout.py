"""Softmax with attention dropout by blocks of query rows: SDPA's math kernel with the same mask."""

from __future__ import annotations

import pytest
import torch

from lra_bench.attention import build_attention
from lra_bench.attention import softmax as softmax_module
from lra_bench.attention import softmax_dropout as sd
from lra_bench.attention.base import key_padding_bias
from lra_bench.benchmarking.measure import saved_bytes_mb

P = 0.3


def sdpa_math(q, k, v, bias, keep):
    """Torch's own math kernel of SDPA with a given dropout mask (what ``dropout_p > 0`` runs on a
    CPU)."""
    return torch.ops.aten._scaled_dot_product_attention_math(
        q, k, v, bias, P, False, dropout_mask=keep
    )[0]


def inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, 3, n, 8, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    ]


@pytest.mark.filterwarnings("ignore:.*Dropout mask")
@pytest.mark.parametrize("n", [5, 40, 97])
@pytest.mark.parametrize("padded", [False, True])
def test_blocks_match_sdpa_math_with_a_fixed_mask(n, padded, monkeypatch):
    q, k, v = inputs(n)
    keep = torch.rand(2, 3, n, n, generator=torch.Generator().manual_seed(1)) >= P
    mask = None
    if padded:
        mask = torch.ones(2, n, dtype=torch.bool)
        mask[1, n // 2 + 1 :] = False
    bias = key_padding_bias(mask, q.dtype)
    monkeypatch.setattr(sd, "BLOCK_ELEMENTS", 1)  # blocks of MIN_ROWS rows: several when n > 16
    monkeypatch.setattr(sd, "keep_mask", lambda gen, shape, p, rows, like: keep[:, :, rows])
    out = sd.dropped_softmax_attention(q, k, v, bias, P)
    expected = sdpa_math(q, k, v, bias, keep)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # negative control: another mask gives other outputs
    other = sdpa_math(q, k, v, bias, ~keep)
    assert not torch.allclose(out, other)


def test_backward_draws_the_forwards_masks(monkeypatch):
    """With the real generator: gradients equal those of the materialised form with the masks
    that forward drew (recorded), so backward redraws exactly those."""
    q, k, v = inputs(50, seed=2)
    drawn = []
    real = sd.keep_mask

    def recording(gen, shape, p, rows, like):
        mask = real(gen, shape, p, rows, like)
        drawn.append((rows, mask))
        return mask

    monkeypatch.setattr(sd, "keep_mask", recording)
    monkeypatch.setattr(sd, "BLOCK_ELEMENTS", 1)
    torch.manual_seed(3)
    out = sd.dropped_softmax_attention(q, k, v, None, P)
    forward_masks = list(drawn)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    keep = torch.cat([m for _, m in forward_masks], dim=2)
    redrawn = drawn[len(forward_masks) :]
    assert len(redrawn) == len(forward_masks)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(redrawn, forward_masks, strict=True))
    expected = sdpa_math(q, k, v, None, keep)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert 0.6 < keep.double().mean() < 0.8  # kept with probability 1 - P


def test_softmax_takes_the_block_path_for_dropout_on_a_cpu_only(monkeypatch):
    calls = []
    real = softmax_module.dropped_softmax_attention

    def spy(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(softmax_module, "dropped_softmax_attention", spy)
    attn = build_attention({"name": "softmax", "dropout": 0.1}, head_dim=8, num_heads=2, max_len=64)
    q, k, v = (torch.randn(2, 2, 64, 8) for _ in range(3))
    attn.train()(q, k, v)
    assert calls == [0.1]
    attn.eval()(q, k, v)  # no dropout: SDPA's fused kernel
    zero = build_attention({"name": "softmax", "dropout": 0.0}, head_dim=8, num_heads=2, max_len=64)
    zero.train()(q, k, v)
    assert calls == [0.1]


def test_nothing_of_size_n_squared_is_kept_for_backward():
    n = 256
    q, k, v = (torch.randn(2, 2, n, 8, requires_grad=True) for _ in range(3))
    attn = build_attention({"name": "softmax", "dropout": 0.1}, head_dim=8, num_heads=2, max_len=n)
    total, own = saved_bytes_mb(lambda: attn.train()(q, k, v), (q, k, v))
    assert own * 2**20 < 2 * 2 * n * n * 4 / 16  # far below one copy of the weights
    math_attn = build_attention(
        {"name": "softmax", "dropout": 0.1, "impl": "math"}, head_dim=8, num_heads=2, max_len=n
    )
    _, math_own = saved_bytes_mb(lambda: math_attn.train()(q, k, v), (q, k, v))
    assert math_own * 2**20 >= 2 * 2 * n * n * 4  # the control keeps the weights
