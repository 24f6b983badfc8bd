"""The fast (chunked, recomputing) attention paths against their plain autograd references, in float64."""

from __future__ import annotations

import pytest
import torch

from attention_cases import SEEDS, rand_qkv
from lra_bench.attention import build_attention, chunked
from lra_bench.attention.pinv import (
    newton_schulz_pinv,
    newton_schulz_reference,
    newton_schulz_start,
)
from lra_bench.benchmarking.measure import saved_for_backward_mb

# settings of each fast variant worth comparing (every one against impl=reference)
CASES = {
    "skyformer": [
        {"num_landmarks": 16, "pinv_init": "per_matrix", "landmarks_from": "split"},
        {"num_landmarks": 16, "pinv_init": "batch", "landmarks_from": "joint"},
        {"num_landmarks": 5, "pinv_init": "batch", "landmarks_from": "split", "gamma": 0.0},
    ],
}
FLAT = [(name, kw) for name, settings in CASES.items() for kw in settings]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 rows, so that n = 50 runs over several chunks and a ragged last one."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(chunked, "MIN_CHUNK", 7)


def build(name: str, impl: str, kw: dict[str, object], *, head_dim: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {"name": name, "impl": impl, **kw}
    return build_attention(cfg, head_dim=head_dim, num_heads=2, max_len=64).double().eval()


def outputs_and_grads(attn: torch.nn.Module, q, k, v, mask) -> list[torch.Tensor]:
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = attn(q, k, v, mask)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(99), dtype=out.dtype)
    return [out, *torch.autograd.grad(out, (q, k, v), weights)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name, kw", FLAT)
def test_fast_equals_reference_with_gradients(name, kw, padded, seed):
    q, k, v = rand_qkv(seed, n=50)
    mask = None
    if padded:
        mask = torch.ones(2, 50, dtype=torch.bool)
        mask[1, 31:] = False
    fast = outputs_and_grads(build(name, "fast", kw), q, k, v, mask)
    ref = outputs_and_grads(build(name, "reference", kw), q, k, v, mask)
    for what, a, b in zip(("out", "dq", "dk", "dv"), fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.parametrize("name, kw", FLAT)
def test_fast_path_passes_gradcheck(name, kw):
    q, k, v = (x.requires_grad_() for x in rand_qkv(21, n=15, d=4))
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, 11:] = False
    attn = build(name, "fast", {**kw, "num_landmarks": 4}, head_dim=4)
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask), (q, k, v))


@pytest.mark.parametrize("init", ["per_matrix", "batch"])
def test_newton_schulz_fast_equals_reference_with_gradients(init):
    g = torch.Generator().manual_seed(3)
    a = torch.rand(3, 2, 9, 9, generator=g, dtype=torch.float64)
    m = (a @ a.mT / 9 + 0.2 * torch.eye(9, dtype=torch.float64)).requires_grad_()
    weights = torch.randn(3, 2, 9, 9, generator=g, dtype=torch.float64)
    fast, ref = newton_schulz_pinv(m, 6, init), newton_schulz_reference(m, 6, init)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(fast, m, weights)[0], torch.autograd.grad(ref, m, weights)[0], rtol=1e-10, atol=1e-12)
    nonsymmetric = torch.rand(2, 5, 5, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: newton_schulz_pinv(x, 3, init), (nonsymmetric,))


def test_batch_start_is_one_max_column_sum_over_the_batch():
    m = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    largest_column_sum = max(float(m[i, j, :, c].sum()) for i in range(3) for j in range(2) for c in range(6))
    torch.testing.assert_close(newton_schulz_start(m, "batch"), m.transpose(-1, -2) / largest_column_sum)
    per_matrix = newton_schulz_start(m, "per_matrix")
    for i, j in [(0, 0), (2, 1)]:
        norms = torch.linalg.matrix_norm(m[i, j], ord=1) * torch.linalg.matrix_norm(m[i, j], ord=float("inf"))
        torch.testing.assert_close(per_matrix[i, j], m[i, j].T / norms)


def test_chunked_blocks_match_the_dense_gaussian_kernel():
    x, y, v = rand_qkv(5, n=30)
    y = y[:, :, :9]
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 17:] = False
    dense = torch.exp(-torch.cdist(0.5 * x, y) ** 2 / 2)
    y_aug = chunked.augment_landmarks(y)
    torch.testing.assert_close(chunked.kernel_apply(x, y_aug, v[:, :, :9], scale=0.5), dense @ v[:, :, :9])
    torch.testing.assert_close(chunked.kernel_reduce(x, y_aug, v, mask, scale=0.5), (dense * mask[:, None, :, None]).mT @ v)


@pytest.mark.parametrize("name, kw", FLAT[:1])
def test_fast_path_saves_only_its_inputs_per_token(name, kw):
    """Doubling n adds exactly q, k, v to what backward keeps: no n x m block is saved."""

    def saved(impl: str, n: int) -> float:
        q, k, v = (x.requires_grad_() for x in rand_qkv(0, n=n))
        attn = build(name, impl, kw)
        return saved_for_backward_mb(lambda: attn(q, k, v))

    qkv_growth = 3 * 2 * 2 * 256 * 8 * 8 / 2**20  # q, k, v: [2, 2, 256 more tokens, 8] in float64
    assert saved("fast", 512) - saved("fast", 256) == pytest.approx(qkv_growth, rel=1e-9)
    assert saved("reference", 512) > saved("fast", 512) + 2 * 2 * 512 * 16 * 8 / 2**20  # the plain form keeps n x m blocks
