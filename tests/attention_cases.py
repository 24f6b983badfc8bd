"""Shared helpers and small settings for the attention tests (every registered variant)."""

from __future__ import annotations

import math

import torch

from lra_bench.attention import build_attention

SEEDS = [0, 1, 2]
# small settings so that each variant's structure
# (landmarks, blocks, buckets...) is exercised at n ~ 100
SMALL = {
    "kernelized": {},
    "nystromformer": {"num_landmarks": 16, "conv_kernel": 5},
    "linformer": {"proj_dim": 16},
    "performer": {"num_features": 32},
    "reformer": {"chunk_size": 16},
    "bigbird": {"block_size": 16, "num_random_blocks": 2},
    "informer": {"factor": 2},
    "linear": {},
    "local": {"block_size": 16},
    "longformer": {"window": 8},
    "sparse": {"stride": 16, "summary": 4},
    "sinkhorn": {"block_size": 16},
    "synthesizer": {},
}
# variants without an entry above, and where they are tested instead
TESTED_ELSEWHERE = {
    "softmax": "the exact reference every other variant is compared with",
    "skyformer": "tests/test_skyformer.py and tests/test_fast_paths.py",
}
# tiny settings for finite-difference gradient checks at n ~ 22
TINY = {
    "kernelized": {},
    "nystromformer": {"num_landmarks": 4, "conv_kernel": 3},
    "linformer": {"proj_dim": 4},
    "performer": {"num_features": 8},
    "reformer": {"chunk_size": 4},
    "bigbird": {"block_size": 4, "num_random_blocks": 1},
    "informer": {"factor": 1},
    "linear": {},
    "local": {"block_size": 4},
    "longformer": {"window": 3},
    "sparse": {"stride": 5, "summary": 2},
    "sinkhorn": {"block_size": 4},
    "synthesizer": {},
}


def rand_qkv(
    seed: int, b: int = 2, h: int = 2, n: int = 32, d: int = 8, scale: float = 1.0
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


def build(name: str, *, max_len: int = 256, head_dim: int = 8, **kw: object) -> torch.nn.Module:
    torch.manual_seed(
        0
    )  # learned parameters (linformer, sinkhorn, synthesizer) start the same in every test
    attn = build_attention(
        {"name": name, "dropout": 0.0, **kw}, head_dim=head_dim, num_heads=2, max_len=max_len
    )
    return attn.double().eval()


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1) @ v
