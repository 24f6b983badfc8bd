"""The fast (chunked, recomputing) attention paths against their plain autograd references, in
float64."""

from __future__ import annotations

import pytest
import torch

from attention_cases import SEEDS, rand_qkv
from lra_bench.attention import build_attention, chunked, pinv, skyformer_fast
from lra_bench.attention.pinv import (
    newton_schulz_pinv,
    newton_schulz_reference,
    newton_schulz_scale,
    newton_schulz_start,
    symmetric_newton_schulz_times,
)
from lra_bench.benchmarking.measure import saved_for_backward_mb

SMALL_GROUP_ELEMENTS = skyformer_fast._small_group_elements  # before the fixture replaces it

# settings of each fast variant worth comparing (every one against impl=reference)
CASES = {
    "skyformer": [
        {"num_landmarks": 16, "pinv_init": "per_matrix", "landmarks_from": "split"},
        {"num_landmarks": 16, "pinv_init": "batch", "landmarks_from": "joint"},
        {"num_landmarks": 5, "pinv_init": "batch", "landmarks_from": "split", "gamma": 0.0},
    ],
    "nystromformer": [
        {"num_landmarks": 16, "conv_kernel": 0},
        {"num_landmarks": 5, "conv_kernel": 5, "pinv_init": "batch"},
        {"num_landmarks": 40, "conv_kernel": 0},  # more landmarks than the padded sequence's tokens
    ],
    "performer": [
        {"num_features": 16},
        {"num_features": 16, "eps": 0.0},
        {
            "num_features": 16,
            "score_scale": "inv_d",
            "padded_keys": "zeroed",
            "stabilizer": "global",
            "eps": 1e-4,
            "redraw": "fixed",
        },
    ],
}
SIZE = {"skyformer": "num_landmarks", "nystromformer": "num_landmarks", "performer": "num_features"}
FLAT = [(name, kw) for name, settings in CASES.items() for kw in settings]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 rows, so that n = 50 runs over several chunks and a ragged last one; Skyformer's
    m x m part one batch entry at a time."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(chunked, "MIN_CHUNK", 7)
    monkeypatch.setattr(skyformer_fast, "_small_group_elements", lambda q: 1)


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
    assert_fast_equals_reference(name, kw, seed, real_tokens=(50, 31) if padded else None)


def assert_same_outputs_and_grads(fast: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    """Output, dq, dk and dv equal to float64 rounding."""
    for what, a, b in zip(("out", "dq", "dk", "dv"), fast, ref, strict=True):
        torch.testing.assert_close(
            a, b, rtol=1e-10, atol=1e-12, msg=lambda m, what=what: f"{what}: {m}"
        )


def assert_fast_equals_reference(
    name: str, kw: dict[str, object], seed: int, real_tokens: tuple[int, int] | None
) -> None:
    """Outputs and dq, dk, dv of both paths on one batch of two sequences of 50 (``real_tokens``
    each, or no mask)."""
    q, k, v = rand_qkv(seed, n=50)
    mask = None
    if real_tokens is not None:
        mask = torch.arange(50) < torch.tensor(real_tokens).unsqueeze(1)
    fast = outputs_and_grads(build(name, "fast", kw), q, k, v, mask)
    ref = outputs_and_grads(build(name, "reference", kw), q, k, v, mask)
    assert_same_outputs_and_grads(fast, ref)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name, kw", FLAT)
def test_fast_equals_reference_on_the_models_layout(name, kw, padded):
    """q, k, v as the model hands them over: strided views of one projection ``[b, n, 3, h, d]``
    (the fast paths read rows of them and must not assume contiguous tensors)."""
    g = torch.Generator().manual_seed(6)
    qkv = torch.randn(2, 50, 3, 2, 8, generator=g, dtype=torch.float64)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    mask = torch.arange(50) < torch.tensor([50, 23]).unsqueeze(1) if padded else None
    fast = outputs_and_grads(build(name, "fast", kw), q, k, v, mask)
    ref = outputs_and_grads(
        build(name, "reference", kw), *(x.contiguous() for x in (q, k, v)), mask
    )
    assert_same_outputs_and_grads(fast, ref)


def _not_on_this_path(*args):
    raise AssertionError("the eigenvalue path ran where the iterations should")


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name, kw", FLAT)
def test_fast_equals_reference_in_gpu_tiles(name, kw, padded, monkeypatch: pytest.MonkeyPatch):
    """The path a GPU gets (every head at once, rows in chunks; Skyformer's m x m part by
    iterations through autograd, every batch entry in one group), run on the CPU."""
    monkeypatch.setattr(chunked, "PER_HEAD_DEVICES", ())
    monkeypatch.setattr(pinv, "EIGEN_DEVICES", ())
    monkeypatch.setattr(pinv._SpectralNewtonSchulzTimes, "apply", _not_on_this_path)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS_GPU", 1)
    assert_fast_equals_reference(name, kw, 4, real_tokens=(17, 50) if padded else None)


@pytest.mark.parametrize(
    "n, tiles",
    [(10, 1), (40, 2), (60, 4), (120, 2 * 2 * 2)],  # all at once, per entry, per head, per rows
)
@pytest.mark.parametrize("name, kw", [f for f in FLAT if f[0] != "nystromformer"])
def test_tiling_chosen_by_size_equals_reference(name, kw, n, tiles, monkeypatch):
    """Short lengths: as many whole heads and batch entries per tile as fit ``CHUNK_ELEMENTS``;
    long ones: rows of one head per tile; every choice gives the reference's outputs and
    gradients."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 2 * 40 * 16)  # two heads of 40 rows at m = 16
    monkeypatch.setattr(chunked, "MIN_CHUNK", 50)
    q = torch.randn(2, 2, n, 8, dtype=torch.float64)
    assert len(list(chunked.tiles(q, 16))) == tiles
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, n, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(n) < torch.tensor([n, n // 2]).unsqueeze(1)
    kw = {**kw, SIZE[name]: 16}
    fast = outputs_and_grads(build(name, "fast", kw), q, k, v, mask)
    ref = outputs_and_grads(build(name, "reference", kw), q, k, v, mask)
    assert_same_outputs_and_grads(fast, ref)


@pytest.mark.parametrize("name, kw", [f for f in FLAT if f[0] == "skyformer"])
def test_a_last_tile_of_fewer_batch_entries_equals_reference(name, kw, monkeypatch):
    """Three batch entries, two per tile of whole heads: the last tile holds one entry, and the
    tile buffers shaped by the first must fit it."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 2 * 40 * 16)  # two entries of 2 heads x 20
    q = torch.randn(3, 2, 20, 8, dtype=torch.float64)
    entries = [tile[0] for tile in chunked.tiles(q, 16)]
    assert entries == [slice(0, 2), slice(2, 3)]
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(3, 2, 20, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(20) < torch.tensor([20, 11, 17]).unsqueeze(1)
    kw = {**kw, SIZE[name]: 16}
    fast = outputs_and_grads(build(name, "fast", kw), q, k, v, mask)
    ref = outputs_and_grads(build(name, "reference", kw), q, k, v, mask)
    assert_same_outputs_and_grads(fast, ref)


@pytest.mark.slow  # numerical Jacobians; the quick loop compares gradients with the reference
@pytest.mark.parametrize("name, kw", FLAT)
def test_fast_path_passes_gradcheck(name, kw):
    q, k, v = (x.requires_grad_() for x in rand_qkv(21, n=15, d=4))
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, 11:] = False
    if (
        name == "performer"
    ):  # with eps > 0 the (constant, detached) max shifts no longer cancel exactly
        kw = {**kw, "eps": 0.0}
    attn = build(name, "fast", {**kw, SIZE[name]: 4}, head_dim=4)
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask), (q, k, v))


@pytest.mark.parametrize("init", ["per_matrix", "batch"])
def test_newton_schulz_fast_equals_reference_with_gradients(init):
    g = torch.Generator().manual_seed(3)
    a = torch.rand(3, 2, 9, 9, generator=g, dtype=torch.float64)
    m = (a @ a.mT / 9 + 0.2 * torch.eye(9, dtype=torch.float64)).requires_grad_()
    weights = torch.randn(3, 2, 9, 9, generator=g, dtype=torch.float64)
    fast, ref = newton_schulz_pinv(m, 6, init), newton_schulz_reference(m, 6, init)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        torch.autograd.grad(fast, m, weights)[0],
        torch.autograd.grad(ref, m, weights)[0],
        rtol=1e-10,
        atol=1e-12,
    )
    nonsymmetric = torch.rand(2, 5, 5, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: newton_schulz_pinv(x, 3, init), (nonsymmetric,))


def normalised_kernel(
    seed: int, *, batch: int = 3, size: int = 12, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Skyformer's M = D^-1/2 (k(L, L) + 0.1 I) D^-1/2 for random landmarks: symmetric, norm
    about 1."""
    rows = (
        torch.randn(batch, size, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        * 8**-0.25
    )
    w = torch.exp(-0.5 * torch.cdist(rows, rows) ** 2) + 0.1 * torch.eye(size, dtype=dtype)
    d_inv_sqrt = w.sum(-1).rsqrt()
    return d_inv_sqrt[..., :, None] * w * d_inv_sqrt[..., None, :]


def with_repeated_eigenvalues(seed: int) -> torch.Tensor:
    """Block-diagonal [A 0; 0 A]: every eigenvalue twice, where divided differences meet
    derivatives."""
    a = normalised_kernel(seed, size=6)
    return torch.cat(
        [torch.cat([a, torch.zeros_like(a)], -1), torch.cat([torch.zeros_like(a), a], -1)], -2
    )


def spectral_and_iterated(
    source: torch.Tensor, x: torch.Tensor, init: str, iters: int = 6
) -> list[torch.Tensor]:
    """Z x both ways, M = (source + source^T) / 2: gradients reach source through symmetric
    perturbations only."""
    results = []
    for way in ("spectral", "iterated"):
        m = 0.5 * (source + source.mT)
        if way == "spectral":
            results.append(symmetric_newton_schulz_times(m, newton_schulz_scale(m, init), x, iters))
        else:
            results.append(newton_schulz_reference(m, iters, init) @ x)
    return results


@pytest.mark.parametrize("init", ["per_matrix", "batch"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", [normalised_kernel, with_repeated_eigenvalues])
def test_symmetric_pinv_equals_the_iterations_with_gradients(make, seed, init):
    """On eigenvalues, the same steps: outputs and gradients for M and x as the plain loop."""
    source = make(seed).requires_grad_()
    g = torch.Generator().manual_seed(seed + 50)
    x = torch.randn(*source.shape[:-1], 3, generator=g, dtype=source.dtype, requires_grad=True)
    weights = torch.randn(x.shape, generator=g, dtype=source.dtype)
    fast, ref = spectral_and_iterated(source, x, init)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(
        torch.autograd.grad(fast, (source, x), weights),
        torch.autograd.grad(ref, (source, x), weights),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("init", ["per_matrix", "batch"])
def test_symmetric_pinv_passes_gradcheck(init):
    source = normalised_kernel(7, batch=2, size=5).requires_grad_()
    x = torch.randn(
        2, 5, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(
        lambda s, v: spectral_and_iterated(s, v, init, iters=3)[0], (source, x)
    )


def test_symmetric_pinv_in_float32_is_as_close_to_float64_as_the_iterations():
    m = normalised_kernel(3, batch=8, size=64)
    x = torch.randn(8, 64, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    exact = newton_schulz_reference(m, 6) @ x
    scale = exact.abs().max()
    m32, x32 = m.float(), x.float()
    spectral = (
        symmetric_newton_schulz_times(m32, newton_schulz_scale(m32), x32).double() - exact
    ).abs().max() / scale
    iterated = ((newton_schulz_pinv(m32, 6) @ x32).double() - exact).abs().max() / scale
    assert spectral < 1e-5 and iterated < 1e-5, (spectral, iterated)


def test_symmetric_pinv_falls_back_to_the_iterations_where_eigh_fails(
    monkeypatch: pytest.MonkeyPatch,
):
    def failing(m: torch.Tensor) -> None:
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    m, x = normalised_kernel(4), torch.randn(3, 12, 2, dtype=torch.float64)
    monkeypatch.setattr(torch.linalg, "eigh", failing)
    got = symmetric_newton_schulz_times(m, newton_schulz_scale(m), x)
    torch.testing.assert_close(got, newton_schulz_pinv(m, 6) @ x, rtol=0, atol=0)


@pytest.mark.parametrize("padded", [False, True])
def test_skyformer_groups_whose_eigh_fails_take_the_autograd_path(
    padded: bool, monkeypatch: pytest.MonkeyPatch
):
    """Where the eigendecomposition fails, a group of the m x m part runs autograd through the
    iterations (``GraphSmall``), with the reference's outputs and gradients."""

    def failing(m: torch.Tensor) -> None:
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    assert_fast_equals_reference(
        "skyformer", CASES["skyformer"][0], 1, real_tokens=(50, 31) if padded else None
    )


def test_skyformer_small_part_by_hand_keeps_its_tensors_in_the_saved_count():
    """The CPU's hand-written m x m part saves its eigenvectors through autograd's saved tensors,
    so the bench's saved-bytes count sees them: the same count, within the m x m part's own
    autograd graph, as the graph path keeps."""
    q, k, v = (x.requires_grad_() for x in rand_qkv(0, n=50))
    attn = build("skyformer", "fast", CASES["skyformer"][0])
    by_hand = saved_for_backward_mb(lambda: attn(q, k, v))
    eigenvectors = 2 * 2 * 16 * 16 * 8 / 2**20  # [b, h, m, m] in float64
    inputs = 3 * q.numel() * 8 / 2**20
    assert by_hand > inputs + eigenvectors


def test_batch_start_is_one_max_column_sum_over_the_batch():
    m = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    largest_column_sum = max(
        float(m[i, j, :, c].sum()) for i in range(3) for j in range(2) for c in range(6)
    )
    torch.testing.assert_close(
        newton_schulz_start(m, "batch"), m.transpose(-1, -2) / largest_column_sum
    )
    per_matrix = newton_schulz_start(m, "per_matrix")
    for i, j in [(0, 0), (2, 1)]:
        norms = torch.linalg.matrix_norm(m[i, j], ord=1) * torch.linalg.matrix_norm(
            m[i, j], ord=float("inf")
        )
        torch.testing.assert_close(per_matrix[i, j], m[i, j].T / norms)


def test_chunked_blocks_match_the_dense_gaussian_kernel():
    x, y, v = rand_qkv(5, n=30)
    y = y[:, :, :9]
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 17:] = False
    dense = torch.exp(-(torch.cdist(0.5 * x, y) ** 2) / 2)
    y_aug = chunked.augment_landmarks(y)
    torch.testing.assert_close(
        chunked.kernel_apply(x, y_aug, v[:, :, :9], scale=0.5), dense @ v[:, :, :9]
    )
    torch.testing.assert_close(
        chunked.kernel_reduce(x, y_aug, v, mask, scale=0.5), (dense * mask[:, None, :, None]).mT @ v
    )


@pytest.mark.parametrize("name, kw", [(name, settings[0]) for name, settings in CASES.items()])
def test_fast_path_saves_only_its_inputs_per_token(name, kw):
    """Doubling n adds q, k, v (and the output rows it divides) to what backward keeps: no n x m
    block."""

    def saved(impl: str, n: int) -> float:
        q, k, v = (x.requires_grad_() for x in rand_qkv(0, n=n))
        attn = build(name, impl, kw)
        return saved_for_backward_mb(lambda: attn(q, k, v))

    # q, k, v; + output, its row statistics (fused attention) and the segment index of q and k
    # (int64);
    # + [v, 1] and the output before the division
    rows = {"skyformer": 3, "nystromformer": 4.375, "performer": 5}[name]
    growth = (
        rows * 2 * 2 * 256 * (8 + (name == "performer")) * 8 / 2**20
    )  # [2, 2, 256 more tokens, d(+1)], float64
    assert saved("fast", 512) - saved("fast", 256) <= growth * (1 + 1e-9)
    assert (
        saved("reference", 512) > saved("fast", 512) + 2 * 2 * 512 * 16 * 8 / 2**20
    )  # the plain form keeps n x m blocks


# ----------------------------------------------------------- the peer code's settings, restated


def peer_iterative_inv(mat: torch.Tensor, n_iter: int = 6) -> torch.Tensor:
    """The code's Newton-Schulz: V0 = K^T / (largest column sum anywhere in the batch)."""
    eye = torch.eye(mat.shape[-1], dtype=mat.dtype)
    v = mat.transpose(-1, -2) / torch.max(torch.sum(mat, dim=-2))
    for _ in range(n_iter):
        kv = mat @ v
        v = (0.25 * v) @ (13 * eye - kv @ (15 * eye - kv @ (7 * eye - kv)))
    return v


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("padded", [False, True])
def test_skyformer_batch_start_is_the_peer_code(impl, padded):
    q, k, v = rand_qkv(30, n=40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    if padded:
        mask[1, 25:] = False
    idx = torch.randint(0, 25, (2, 2, 12), generator=torch.Generator().manual_seed(1))
    idx[..., 6:] += 40  # half the landmarks from K
    attn = build("skyformer", impl, {"num_landmarks": 12, "pinv_init": "batch"})
    attn.draw_landmarks = lambda lengths, n, heads: idx
    s = 8**-0.25
    x, y = q * s, k * s * mask[:, None, :, None]
    sketch = torch.cat([x, y], dim=2).gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 8))

    def rbf(a, b):
        return torch.exp(
            a @ b.mT - (a * a).sum(-1, keepdim=True) / 2 - (b * b).sum(-1)[..., None, :] / 2
        )

    stas = rbf(sketch, sketch) + 0.1 * torch.eye(12, dtype=torch.float64)
    d_inv = stas.sum(-1) ** -0.5
    stas = d_inv[..., :, None] * stas * d_inv[..., None, :]
    keys = (rbf(y, sketch) * d_inv[..., None, :]) @ peer_iterative_inv(stas)
    keys = keys * d_inv[..., None, :] * mask[:, None, :, None]
    ref = rbf(x, sketch) @ (keys.mT @ (v * mask[:, None, :, None]))
    torch.testing.assert_close(attn(q, k, v, mask), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_nystromformer_peer_settings_are_the_peer_code(impl):
    q, k, v = rand_qkv(31, n=48)
    mask = torch.ones(2, 48, dtype=torch.bool)
    attn = build(
        "nystromformer", impl, {"num_landmarks": 8, "pinv_init": "batch", "conv_kernel": 0}
    )
    s = 8**-0.25
    x, y = q * s, k * s
    x_l, y_l = x.reshape(2, 2, 8, 6, 8).mean(-2), y.reshape(2, 2, 8, 6, 8).mean(-2)
    k1, k2, k3 = (torch.softmax(a @ b.mT, dim=-1) for a, b in ((x, y_l), (x_l, y_l), (x_l, y)))
    ref = (k1 @ peer_iterative_inv(k2)) @ (k3 @ v)
    torch.testing.assert_close(attn(q, k, v, mask), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("padded", [False, True])
def test_performer_peer_settings_are_the_peer_code(impl, padded):
    q, k, v = rand_qkv(32, n=40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    if padded:
        mask[0, 23:] = False
    w = torch.randn(24, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    peer = {
        "num_features": 24,
        "score_scale": "inv_d",
        "padded_keys": "zeroed",
        "stabilizer": "global",
        "eps": 1e-4,
        "redraw": "fixed",
    }
    attn = build("performer", impl, peer)
    attn.draw_features = lambda d, device=None: w
    keep = mask[:, None, :, None].double()
    normalizer = 8**-0.25  # applied by the caller, then again inside the feature map

    def features(data, is_query):
        dash = (normalizer * data) @ w.T
        diag = (data**2).sum(-1, keepdim=True) / 2 * normalizer**2
        top = dash.amax(dim=-1, keepdim=True) if is_query else dash.max()
        return 24**-0.5 * (torch.exp(dash - diag - top) + 1e-4)

    qf, kf = features(q * normalizer, True), features(k * normalizer * keep, False)
    d_inv = 1.0 / (qf @ kf.sum(-2).unsqueeze(-1))
    ref = (qf @ (kf.mT @ (v * keep))) * d_inv
    torch.testing.assert_close(attn(q, k, v, mask), ref, rtol=1e-9, atol=1e-11)
    if (
        padded
    ):  # zeroed padded keys still weigh in the normaliser: the output differs from removing them
        attn.cfg.padded_keys = "removed"
        assert not torch.allclose(attn(q, k, v, mask), ref, rtol=1e-6, atol=0)


def test_nystromformer_conv_equals_the_2d_depthwise_convolution_with_gradients():
    attn = build("nystromformer", "fast", {"num_landmarks": 8, "conv_kernel": 7})
    v = rand_qkv(33, n=30)[2].requires_grad_()
    weights = torch.randn(v.shape, generator=torch.Generator().manual_seed(34), dtype=v.dtype)
    ours = attn.depthwise_conv(v)
    conv2d = torch.nn.functional.conv2d(v, attn.conv.weight, padding=attn.conv.padding, groups=2)
    torch.testing.assert_close(ours, conv2d, rtol=1e-12, atol=1e-14)
    for a, b in zip(
        torch.autograd.grad(ours, (v, attn.conv.weight), weights),
        torch.autograd.grad(conv2d, (v, attn.conv.weight), weights),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    per_channel_weight = v.shape[1] * v.shape[3] * 7
    assert (
        saved_for_backward_mb(lambda: attn.depthwise_conv(v))
        == (v.numel() + per_channel_weight) * 8 / 2**20
    )  # v, not a copy


def test_recomputed_keeps_only_its_inputs_and_gives_the_same_gradients():
    x = torch.randn(
        6, 6, generator=torch.Generator().manual_seed(34), dtype=torch.float64, requires_grad=True
    )

    def fn(a):
        return (a @ a).tanh() @ a

    assert saved_for_backward_mb(lambda: chunked.recomputed(fn, x)) == x.numel() * 8 / 2**20
    assert saved_for_backward_mb(lambda: fn(x)) > x.numel() * 8 / 2**20
    torch.testing.assert_close(
        torch.autograd.grad(chunked.recomputed(fn, x).sum(), x)[0],
        torch.autograd.grad(fn(x).sum(), x)[0],
    )


def test_recomputed_with_several_outputs_some_unused_gives_the_same_gradients():
    g = torch.Generator().manual_seed(35)
    x, y = (
        torch.randn(5, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)
    )

    def fn(a, b):
        return (a @ b).tanh(), a.exp(), (b * b).sum(-1)  # the last one is never used

    def loss(outputs):
        return (outputs[0] @ outputs[1]).square().sum()

    assert saved_for_backward_mb(lambda: chunked.recomputed(fn, x, y)) == 2 * x.numel() * 8 / 2**20
    fast, plain = (
        torch.autograd.grad(loss(chunked.recomputed(fn, x, y)), (x, y)),
        torch.autograd.grad(loss(fn(x, y)), (x, y)),
    )
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_skyformer_small_part_groups_grow_with_the_inputs():
    """A quarter of q's elements per group of m x m matrices, at least SMALL_ELEMENTS: every batch
    entry in one group from n = 2048 at b 4, h 2, d 32, m 128; pairs of entries at n = 1024."""
    sizes = {
        n: SMALL_GROUP_ELEMENTS(torch.empty(4, 2, n, 32, device="meta"))
        for n in (256, 1024, 2048, 16384)
    }
    per_group = {n: size // (2 * 128 * 128) for n, size in sizes.items()}
    assert per_group == {256: 2, 1024: 2, 2048: 4, 16384: 32}


def test_skyformer_tiles_grow_with_the_inputs_within_bounds(monkeypatch):
    """A quarter of the inputs' elements per tile, at least MIN_TILE, at most MAX_TILE."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 1 << 18)
    sizes = {
        n: skyformer_fast._tile_elements(torch.empty(4, 2, n, 32, device="meta"))
        for n in (256, 2048, 4096, 16384)
    }
    low, high = skyformer_fast.MIN_TILE, skyformer_fast.MAX_TILE
    assert sizes == {256: low, 2048: 1 << 17, 4096: 1 << 18, 16384: high}
