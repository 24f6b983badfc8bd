"""The shared LRA model (docs/protocol.md): every attention runs inside the same encoder and heads.

Token + learned positional embeddings, pre-LayerNorm blocks (attention, GELU FFN), a final
LayerNorm, mean pooling, and a classifier; retrieval runs both documents through one shared
encoder and classifies [u, v, u*v, u-v].

Named ``model`` settings reproduce the LRA code's Transformer (models/transformer/transformer.py,
models/layers/common_layers.py) where it differs: ``pooling=cls`` (a zero-initialised token
prepended before the positions are added, its output classified), ``pooling=first_token``,
``positions=sinusoidal``, ``qkv_dim``, ``attn_bias=false``, ``dual_head=lra``, ``init=lra`` and
``norm_eps``. The block layout (pre-LN, final LayerNorm, dropout places) is the same in both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lra_bench.attention import Attention, AttentionConfig, build_attention, make_config
from lra_bench.attention.base import without_autocast
from lra_bench.config import ModelConfig
from lra_bench.dropout import Dropout


def split_heads(projected: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """q, k, v ``[b, heads, n, head_dim]`` from the joint projection ``[b, n, 3 * heads *
    head_dim]``: strided views of it, not copies (the layout every attention receives)."""
    b, n, width = projected.shape
    heads = projected.view(b, n, 3, num_heads, width // (3 * num_heads))
    return tuple(heads.permute(2, 0, 3, 1, 4))


class MultiHeadAttention(nn.Module):
    """Projections around a registered attention variant; optionally run in fp32 under autocast."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attention: Attention,
        dropout: float,
        attn_fp32: bool,
        qkv_dim: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        qkv_dim = qkv_dim or dim
        self.num_heads = num_heads
        self.head_dim = qkv_dim // num_heads
        self.qkv = nn.Linear(dim, 3 * qkv_dim, bias=bias)
        self.out = nn.Linear(qkv_dim, dim, bias=bias)
        self.attention = attention
        self.dropout = Dropout(dropout)
        self.attn_fp32 = attn_fp32

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        if self.attn_fp32 and torch.is_autocast_enabled(x.device.type):
            with without_autocast(x):
                ctx = self.attention(q.float(), k.float(), v.float(), mask)
        else:
            ctx = self.attention(q, k, v, mask)
        ctx = ctx.transpose(1, 2).reshape(b, n, -1).to(x.dtype)
        return self.dropout(self.out(ctx))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        attention: Attention,
        dropout: float,
        attn_fp32: bool,
        *,
        qkv_dim: int | None = None,
        attn_bias: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, attention, dropout, attn_fp32, qkv_dim, attn_bias
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(ffn_dim, dim),
            Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ffn(self.norm2(x))


def option(model_cfg: Any, key: str) -> Any:
    """A ``model`` setting, or ``ModelConfig``'s default for configs saved before it existed."""
    value = getattr(model_cfg, key, None)
    return getattr(ModelConfig(), key) if value is None else value


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed table of LRA's ``common_layers.sinusoidal_init``: sin on even, cos on odd dims."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)[:, : dim // 2]
    return table.float()


class Encoder(nn.Module):
    """Embeddings, blocks, final LayerNorm and pooling: token ids ``[b, n]`` -> ``[b, dim]``."""

    def __init__(
        self, model_cfg: Any, attn_cfg: AttentionConfig, *, vocab_size: int, max_len: int
    ) -> None:
        super().__init__()
        dim, heads = model_cfg.dim, model_cfg.num_heads
        qkv_dim = option(model_cfg, "qkv_dim") or dim  # None = dim
        self.pooling = model_cfg.pooling
        self.token = nn.Embedding(vocab_size, dim)
        if (
            self.pooling == "cls"
        ):  # LRA: a zero-initialised token prepended before positions are added
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            max_len += 1
        learned = option(model_cfg, "positions") == "learned"
        if learned:
            self.position = nn.Parameter(torch.zeros(max_len, dim))
        else:
            self.register_buffer("position", sinusoidal_table(max_len, dim), persistent=False)
        nn.init.normal_(self.token.weight, std=0.02)
        if learned:
            nn.init.normal_(self.position, std=0.02)
        self.dropout = Dropout(model_cfg.dropout)
        norm_eps = option(model_cfg, "norm_eps")
        self.blocks = nn.ModuleList(
            Block(
                dim,
                model_cfg.ffn_dim,
                heads,
                build_attention(
                    attn_cfg, head_dim=qkv_dim // heads, num_heads=heads, max_len=max_len
                ),
                model_cfg.dropout,
                model_cfg.attn_fp32,
                qkv_dim=qkv_dim,
                attn_bias=option(model_cfg, "attn_bias"),
                norm_eps=norm_eps,
            )
            for _ in range(model_cfg.num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.token(ids)
        if self.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        x = self.dropout(x + self.position[: x.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.pooling in ("cls", "first_token"):
            return x[:, 0]
        return pool(x, mask, self.pooling)


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
    """Single-sequence tasks: pooled encoding -> Linear-ReLU-Linear (LRA's ``classifier_head``)."""

    def __init__(self, model_cfg: Any, attn_cfg: AttentionConfig, task_cfg: Any) -> None:
        super().__init__()
        self.encoder = Encoder(
            model_cfg, attn_cfg, vocab_size=task_cfg.vocab_size, max_len=task_cfg.max_len
        )
        self.head = nn.Sequential(
            nn.Linear(model_cfg.dim, model_cfg.classifier_dim),
            nn.ReLU(),
            nn.Linear(model_cfg.classifier_dim, task_cfg.num_classes),
        )
        if option(model_cfg, "init") == "lra":
            init_lra(self)

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        return self.head(self.encoder(batch["input_ids"], batch["mask"]))


class DualClassifier(nn.Module):
    """Retrieval: one shared encoder for both documents.

    ``dual_head=nli``: [u, v, u*v, u-v] -> Linear-ReLU-Linear. ``dual_head=lra``: LRA's
    ``classifier_head_dual`` as matching/train.py calls it (no interaction): [u, v] ->
    Linear(classifier_dim)-ReLU-Linear(classifier_dim // 2)-ReLU-Linear.
    """

    def __init__(self, model_cfg: Any, attn_cfg: AttentionConfig, task_cfg: Any) -> None:
        super().__init__()
        self.encoder = Encoder(
            model_cfg, attn_cfg, vocab_size=task_cfg.vocab_size, max_len=task_cfg.max_len
        )
        dim, hidden, classes = model_cfg.dim, model_cfg.classifier_dim, task_cfg.num_classes
        self.interaction = option(model_cfg, "dual_head")
        if self.interaction == "lra":
            self.head = nn.Sequential(
                nn.Linear(2 * dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden // 2),
                nn.ReLU(),
                nn.Linear(hidden // 2, classes),
            )
        else:
            self.head = nn.Sequential(
                nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, classes)
            )
        if option(model_cfg, "init") == "lra":
            init_lra(self)

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        u = self.encoder(batch["input_ids_1"], batch["mask_1"])
        v = self.encoder(batch["input_ids_2"], batch["mask_2"])
        features = [u, v] if self.interaction == "lra" else [u, v, u * v, u - v]
        return self.head(torch.cat(features, dim=-1))


def _lecun_normal_(weight: torch.Tensor) -> None:
    """jax's ``lecun_normal`` (flax ``nn.Dense``'s default): truncated normal, variance 1/fan_in."""
    std = (
        math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    )  # the std of N(0, 1) truncated to [-2, 2]
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def _xavier_(linear: nn.Linear, chunks: int = 1) -> None:
    """flax ``xavier_uniform`` kernels and ``normal(1e-6)`` biases; ``chunks`` projections fused in
    one Linear."""
    for part in linear.weight.data.chunk(chunks, dim=0):
        nn.init.xavier_uniform_(part)
    if linear.bias is not None:
        nn.init.normal_(linear.bias, std=1e-6)


@torch.no_grad()
def init_lra(model: nn.Module) -> None:
    """The LRA code's initialisers: tokens N(0, 1); attention and MLP kernels xavier-uniform with
    N(0, 1e-6) biases; head layers lecun-normal with zero biases; learned positions N(0, 0.02)
    and the CLS token zero (as built)."""
    for module in model.modules():
        if isinstance(module, Encoder):
            nn.init.normal_(module.token.weight, std=1.0)
        elif isinstance(module, MultiHeadAttention):
            _xavier_(module.qkv, chunks=3)
            _xavier_(module.out)
        elif isinstance(module, Block):
            _xavier_(module.ffn[0])
            _xavier_(module.ffn[3])
    head = getattr(model, "head", None)
    for layer in head.modules() if head is not None else ():
        if isinstance(layer, nn.Linear):
            _lecun_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


def build_model(cfg: Any) -> nn.Module:
    """The task's model with the configured attention (``cfg`` validated: its ``attn`` is typed
    once, for every layer)."""
    cls = DualClassifier if cfg.task.dual else Classifier
    return cls(cfg.model, make_config(cfg.attn), cfg.task)
