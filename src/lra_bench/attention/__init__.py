"""Attention variants: the interface, the registry and every registered variant.

Importing this package registers every variant module listed in ``VARIANT_MODULES``;
installed plugins (entry-point group ``lra_bench.attention``) are registered on first use of
the registry (``available``, a lookup, ``register_attention_configs``).
"""

from importlib import import_module

from lra_bench.attention.base import Attention, AttentionConfig, SampledAttention
from lra_bench.attention.registry import (
    REGISTRY,
    available,
    build_attention,
    checked_config,
    discover_plugins,
    make_config,
    register_attention,
    register_attention_configs,
)

VARIANT_MODULES = [
    "softmax",
    "skyformer",
    "kernelized",
    "nystromformer",
    "linformer",
    "performer",
    "reformer",
    "bigbird",
    "informer",
    "linear",
    "local",
    "longformer",
    "sparse",
    "sinkhorn",
    "synthesizer",
    "custom",
]

for _module in VARIANT_MODULES:
    import_module(f"lra_bench.attention.{_module}")

__all__ = [
    "REGISTRY",
    "Attention",
    "AttentionConfig",
    "SampledAttention",
    "available",
    "discover_plugins",
    "build_attention",
    "make_config",
    "register_attention",
    "checked_config",
    "register_attention_configs",
]
