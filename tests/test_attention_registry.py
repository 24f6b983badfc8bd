"""The attention registry: every variant builds from its composed config, runs at task shapes, validates."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lra_bench.attention import REGISTRY, SampledAttention, available, build_attention, make_config
from lra_bench.compose import compose_config

TASK_LENGTHS = {"listops": 2048, "text": 4096, "retrieval": 4096, "image": 1024, "pathfinder": 1024}
QUADRATIC = {"kernelized"}  # materialises n x n: skipped at 4096 to keep the suite fast


COMPOSED = {name: make_config(compose_config([f"attn={name}"]).attn) for name in available()}  # attn=<name>, typed


def from_config(name: str, max_len: int) -> torch.nn.Module:
    return build_attention(dataclasses.replace(COMPOSED[name]), head_dim=32, num_heads=2, max_len=max_len)  # a copy: tests may edit it


@pytest.mark.parametrize("name", available())
def test_composed_config_is_the_registered_dataclass(name):
    assert type(COMPOSED[name]) is REGISTRY[name].config and COMPOSED[name].name == name
    assert isinstance(from_config(name, 1024), REGISTRY[name].module)


@pytest.mark.parametrize("max_len", sorted(set(TASK_LENGTHS.values())))
@pytest.mark.parametrize("name", available())
def test_builds_from_its_config_and_runs_forward_backward_at_task_shape(name, max_len):
    if name in QUADRATIC and max_len > 2048:
        pytest.skip("quadratic variant: covered at 1024 and 2048")
    attn = from_config(name, max_len).train()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, max_len, 32, generator=g).requires_grad_() for _ in range(3))
    mask = torch.ones(1, max_len, dtype=torch.bool)
    mask[0, max_len - 100 :] = False
    out = attn(q, k, v, mask)
    assert out.shape == q.shape and bool(torch.isfinite(out).all())
    out.square().mean().backward()
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


INVALID = [
    ("kernelized", {"dropout": 1.5}, "dropout"),
    ("nystromformer", {"num_landmarks": 0}, "num_landmarks"),
    ("nystromformer", {"num_landmarks": 10_000}, "num_landmarks"),
    ("nystromformer", {"conv_kernel": 4}, "conv_kernel"),
    ("nystromformer", {"pinv_iters": 0}, "pinv_iters"),
    ("nystromformer", {"dropout": 0.1}, "dropout"),
    ("linformer", {"proj_dim": 0}, "proj_dim"),
    ("linformer", {"proj_dim": 10_000}, "proj_dim"),
    ("performer", {"num_features": 0}, "num_features"),
    ("performer", {"redraw": "sometimes"}, "redraw"),
    ("performer", {"eps": -1.0}, "eps"),
    ("reformer", {"num_hashes": 0}, "num_hashes"),
    ("reformer", {"chunk_size": 0}, "chunk_size"),
    ("reformer", {"chunk_size": 10_000}, "chunk_size"),
    ("reformer", {"num_buckets": 3}, "num_buckets"),
    ("bigbird", {"block_size": 0}, "block_size"),
    ("bigbird", {"block_size": 10_000}, "block_size"),
    ("bigbird", {"window_blocks": 2}, "window_blocks"),
    ("bigbird", {"num_random_blocks": -1}, "num_random_blocks"),
    ("informer", {"factor": 0}, "factor"),
    ("informer", {"num_landmarks": 4}, "num_landmarks"),  # not a setting of informer
]


@pytest.mark.parametrize("name, setting, key", INVALID)
def test_invalid_settings_raise_naming_the_key(name, setting, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        build_attention({"name": name, **setting}, head_dim=32, num_heads=2, max_len=1024)


def rand_qkv(n: int = 1024) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 2, n, 32, generator=g) for _ in range(3)]


@pytest.mark.parametrize("name", available())
def test_eval_outputs_repeat(name):
    attn = from_config(name, 1024).eval()
    q, k, v = rand_qkv()
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in available() if issubclass(from_config(n, 1024).__class__, SampledAttention)])
def test_training_draws_differ_between_calls(name):
    attn = from_config(name, 1024).train()
    if hasattr(attn.cfg, "dropout"):
        attn.cfg.dropout = 0.0  # only the draws may differ
    q, k, v = rand_qkv()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


def test_every_sampling_variant_is_covered():
    sampled = {n for n in available() if isinstance(from_config(n, 1024), SampledAttention)}
    assert {"skyformer", "performer", "reformer", "bigbird", "informer"} <= sampled
