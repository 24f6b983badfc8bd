"""The attention interface shared by every variant (sampling helpers: ``sampling.py``).

Every variant maps ``q, k, v`` of shape ``[batch, heads, n, d]`` and an optional
boolean ``mask`` of shape ``[batch, n]`` (True = real token) to ``[batch, heads, n, d]``.
Padded keys must never influence real queries. The settings every variant accepts
(``AttentionConfig``) live in the torch-free ``settings/base.py`` and are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lra_bench.attention.sampling import DeviceGenerators, seeded_generator, uniform_indices
from lra_bench.attention.settings.base import IMPLS, AttentionConfig

__all__ = [
    "IMPLS",
    "Attention",
    "AttentionConfig",
    "SampledAttention",
    "key_padding_bias",
    "uniform_indices",
    "upcast",
    "valid_lengths",
]


class Attention(nn.Module):
    """Base class: holds the validated config and the shapes the variant was built for."""

    # False for variants that ignore ``k`` (shared-QK Reformer): its projection gets no
    # gradient
    uses_keys: bool = True

    def __init__(
        self, cfg: AttentionConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.max_len = max_len

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class SampledAttention(Attention):
    """A variant that draws random numbers (landmarks, features, hashes, random blocks).

    Training draws come from the module's own generators (one per device type, see
    ``sampling.DeviceGenerators``), seeded from the global torch RNG at construction (so a
    seeded run is deterministic) and saved in the state dict (so a resumed run continues the
    same stream). Eval draws restart from ``cfg.seed`` on every call, so evaluation is
    reproducible whatever happened before. Draws are made on the device they are asked for.
    """

    def __init__(
        self, cfg: AttentionConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        self.train_generators = DeviceGenerators(int(torch.randint(0, 2**62, (1,)).item()))

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator on ``device`` for the current call: the running one in training, a fresh
        seeded one in eval."""
        if self.training:
            return self.train_generators.get(device)
        return seeded_generator(self.cfg.seed, device)

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return self.train_generators.state()

    def set_extra_state(self, state: dict[str, torch.Tensor] | torch.Tensor) -> None:
        self.train_generators.load(state)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(*xs: torch.Tensor) -> list[torch.Tensor]:
    """fp16/bf16 tensors as fp32, others unchanged: the variants compute softmax, exponentials,
    Gram matrices and pseudo-inverses in fp32 and cast the result back to the input dtype."""
    return [x.float() if x.dtype in LOW_PRECISION else x for x in xs]


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` yields here: autocast's when it is on for x's device, else x's
    own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def without_autocast(x: torch.Tensor) -> Any:
    """Autocast off for ``x``'s device: custom autograd functions compute in their inputs' dtype.

    Their backward runs outside autocast, so a forward under autocast would save tensors of
    another dtype than the gradients it meets.
    """
    return torch.autocast(device_type=x.device.type, enabled=False)


def backward_without_autocast(backward: Callable[..., Any]) -> Callable[..., Any]:
    """A custom autograd function's ``backward`` run with autocast off, as its forward ran
    (``without_autocast``): called under autocast, it would otherwise recompute or multiply in
    another dtype than forward did (and ``baddbmm`` refuses mixed dtypes)."""

    @functools.wraps(backward)
    def run(ctx: Any, *grads: Any) -> Any:
        grad = next((g for g in grads if isinstance(g, torch.Tensor)), torch.empty(0))
        with without_autocast(grad):
            return backward(ctx, *grads)

    return run


def hidden_score(dtype: torch.dtype, score: float = -1e9) -> float:
    """A hidden key's finite score in ``dtype``: ``score``, or half the dtype's lowest value where
    it does not fit.

    fp32 and bf16 keep ``score``; fp16 (lowest -65504) gets -32752, which still underflows to
    exactly 0 after the softmax next to any visible key and leaves room for sums not to overflow.
    """
    return max(score, torch.finfo(dtype).min / 2)


def key_padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive bias ``[batch, 1, 1, n]``: 0 for real keys, -inf-like for padded keys."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def valid_lengths(
    mask: torch.Tensor | None, batch: int, n: int, device: torch.device
) -> torch.Tensor:
    """Number of real tokens per sequence, ``[batch]`` (all n when there is no mask)."""
    if mask is None:
        return torch.full((batch,), n, dtype=torch.long, device=device)
    return mask.sum(dim=-1)
