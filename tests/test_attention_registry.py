"""The attention registry: sampling variants built from their composed configs draw afresh in training.

The properties every variant shares (padding, settings, determinism, task shapes) are checked
by the conformance kit in test_attention_conformance.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lra_bench.attention import SampledAttention, available, build_attention, make_config
from lra_bench.compose import compose_config

COMPOSED = {
    name: make_config(compose_config([f"attn={name}"]).attn) for name in available()
}  # attn=<name>, typed


def from_config(name: str, max_len: int) -> torch.nn.Module:
    return build_attention(
        dataclasses.replace(COMPOSED[name]), head_dim=32, num_heads=2, max_len=max_len
    )  # a copy: tests may edit it


def rand_qkv(n: int = 1024) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 2, n, 32, generator=g) for _ in range(3)]


@pytest.mark.parametrize(
    "name", [n for n in available() if issubclass(from_config(n, 1024).__class__, SampledAttention)]
)
def test_training_draws_differ_between_calls(name):
    attn = from_config(name, 1024).train()
    if hasattr(attn.cfg, "dropout"):
        attn.cfg.dropout = 0.0  # only the draws may differ
    q, k, v = rand_qkv()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


def test_every_sampling_variant_is_covered():
    sampled = {n for n in available() if isinstance(from_config(n, 1024), SampledAttention)}
    assert {"skyformer", "performer", "reformer", "bigbird", "informer"} <= sampled
