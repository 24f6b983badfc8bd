"""Registry of attention variants: a decorator binding a config name to a module and its dataclass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lra_bench.attention.base import Attention, AttentionConfig


@dataclass(frozen=True)
class Entry:
    name: str
    module: type[Attention]
    config: type[AttentionConfig]


REGISTRY: dict[str, Entry] = {}


def register_attention(name: str, config: type[AttentionConfig]) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator: ``@register_attention("skyformer", SkyformerConfig)``."""

    def wrap(module: type[Attention]) -> type[Attention]:
        if name in REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        REGISTRY[name] = Entry(name, module, config)
        return module

    return wrap


def available() -> list[str]:
    return sorted(REGISTRY)


def _entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise ValueError(f"unknown attention {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]


def make_config(attn_cfg: DictConfig | dict[str, Any] | AttentionConfig) -> AttentionConfig:
    """Turn the ``attn`` config node into the variant's typed dataclass (types checked, unknown keys refused)."""
    if isinstance(attn_cfg, AttentionConfig):
        return attn_cfg
    container = OmegaConf.to_container(attn_cfg, resolve=True) if isinstance(attn_cfg, DictConfig) else dict(attn_cfg)
    assert isinstance(container, dict)
    entry = _entry(str(container.get("name")))
    known = {f.name for f in fields(entry.config)}
    unknown = sorted(set(container) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: not a setting of attention {entry.name!r} (settings: {', '.join(sorted(known))})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(entry.config), container)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ValueError(f"{key}: {str(err).splitlines()[0]}") from None
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, entry.config)
    return obj


def validate_attention_config(attn_cfg: Any, *, max_len: int, head_dim: int) -> None:
    """Raise ConfigError naming ``attn.<key>`` when the attention settings are invalid."""
    from lra_bench.config import ConfigError

    try:
        make_config(attn_cfg).check(max_len=max_len, head_dim=head_dim)
    except ValueError as err:
        raise ConfigError(f"invalid setting attn.{err}") from None


def build_attention(attn_cfg: Any, *, head_dim: int, num_heads: int, max_len: int) -> Attention:
    """Build the registered module for ``attn_cfg`` (a DictConfig, a dict or the dataclass itself)."""
    cfg = make_config(attn_cfg)
    cfg.check(max_len=max_len, head_dim=head_dim)
    return _entry(cfg.name).module(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
