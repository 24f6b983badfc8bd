"""The cosine attention passes lra-bench's conformance kit and matches its formula."""

from __future__ import annotations

import pytest
import torch

from lra_bench.attention import build_attention
from lra_bench.testing import CHECKS, check_attention


@pytest.mark.parametrize("check", list(CHECKS))
def test_conforms(check):
    check_attention("cosine", checks=[check], invalid=[("temperature", 0.0), ("temperature", -1.0)])


def test_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    attn = build_attention(
        {"name": "cosine", "temperature": 3.0}, head_dim=8, num_heads=2, max_len=16
    ).eval()
    cos = torch.nn.functional.cosine_similarity(q.unsqueeze(-2), k.unsqueeze(-3), dim=-1)
    ref = torch.softmax((3.0 * cos).masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1) @ v
    torch.testing.assert_close(attn(q, k, v, mask), ref)
