"""The shared LRA model (docs/protocol.md): every attention runs inside the same encoder and heads.

Token + learned positional embeddings, pre-LayerNorm blocks (attention, GELU FFN), a final
LayerNorm, mean pooling, and a classifier; retrieval runs both documents through one shared
encoder and classifies [u, v, u*v, u-v].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lra_bench.attention import Attention, AttentionConfig, build_attention, make_config


class MultiHeadAttention(nn.Module):
    """Projections around a registered attention variant; optionally runs it in fp32 under autocast."""

    def __init__(self, dim: int, num_heads: int, attention: Attention, dropout: float, attn_fp32: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        self.attn_fp32 = attn_fp32

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.attn_fp32 and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                ctx = self.attention(q.float(), k.float(), v.float(), mask)
        else:
            ctx = self.attention(q, k, v, mask)
        ctx = ctx.transpose(1, 2).reshape(b, n, -1).to(x.dtype)
        return self.dropout(self.out(ctx))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, attention: Attention, dropout: float, attn_fp32: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attention, dropout, attn_fp32)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ffn(self.norm2(x))


class Encoder(nn.Module):
    """Embeddings, blocks, final LayerNorm and pooling: token ids ``[b, n]`` -> ``[b, dim]``."""

    def __init__(self, model_cfg: Any, attn_cfg: AttentionConfig, *, vocab_size: int, max_len: int) -> None:
        super().__init__()
        dim, heads = model_cfg.dim, model_cfg.num_heads
        self.pooling = model_cfg.pooling
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(model_cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                model_cfg.ffn_dim,
                heads,
                build_attention(attn_cfg, head_dim=dim // heads, num_heads=heads, max_len=max_len),
                model_cfg.dropout,
                model_cfg.attn_fp32,
            )
            for _ in range(model_cfg.num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n = ids.shape[1]
        x = self.dropout(self.token(ids) + self.position[:n])
        for block in self.blocks:
            x = block(x, mask)
        return pool(self.norm(x), mask, self.pooling)


def pool(x: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Mean over the real tokens (``mean``), or the published code's ``mean_padded``: padded
    positions zeroed, then the sum divided by the padded length."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    if mode == "mean_padded":
        return (x * weights).mean(dim=1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class Classifier(nn.Module):
    """Single-sequence tasks: pooled encoding -> Linear-ReLU-Linear."""

    def __init__(self, model_cfg: Any, attn_cfg: AttentionConfig, task_cfg: Any) -> None:
        super().__init__()
        self.encoder = Encoder(model_cfg, attn_cfg, vocab_size=task_cfg.vocab_size, max_len=task_cfg.max_len)
        self.head = nn.Sequential(
            nn.Linear(model_cfg.dim, model_cfg.classifier_dim), nn.ReLU(), nn.Linear(model_cfg.classifier_dim, task_cfg.num_classes)
        )

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        return self.head(self.encoder(batch["input_ids"], batch["mask"]))


class DualClassifier(nn.Module):
    """Retrieval: one shared encoder for both documents, head over [u, v, u*v, u-v]."""

    def __init__(self, model_cfg: Any, attn_cfg: AttentionConfig, task_cfg: Any) -> None:
        super().__init__()
        self.encoder = Encoder(model_cfg, attn_cfg, vocab_size=task_cfg.vocab_size, max_len=task_cfg.max_len)
        self.head = nn.Sequential(
            nn.Linear(4 * model_cfg.dim, model_cfg.classifier_dim), nn.ReLU(), nn.Linear(model_cfg.classifier_dim, task_cfg.num_classes)
        )

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        u = self.encoder(batch["input_ids_1"], batch["mask_1"])
        v = self.encoder(batch["input_ids_2"], batch["mask_2"])
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))


def build_model(cfg: Any) -> nn.Module:
    """The task's model with the configured attention (``cfg`` validated: its ``attn`` is typed once, for every layer)."""
    cls = DualClassifier if cfg.task.dual else Classifier
    return cls(cfg.model, make_config(cfg.attn), cfg.task)
