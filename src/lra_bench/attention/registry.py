"""Registry of attention variants: a decorator binding a config name to a module and its dataclass.

Each variant's dataclass is also an option of Hydra's ``attn`` config group
(``register_attention_configs``), so ``attn=<name>`` composes it with its defaults and
Hydra checks types and keys as for every other group. Problems are raised as
``ValueError("<key>: <rule>")``; ``lra_bench.config.validate`` turns them into ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from hydra.core.config_store import ConfigStore
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
        raise ValueError(f"name: unknown attention {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]


def register_attention_configs() -> None:
    """Store every variant's dataclass as option ``<name>`` of the ``attn`` group (defaults = the dataclass's)."""
    store = ConfigStore.instance()
    for name, entry in REGISTRY.items():
        store.store(group="attn", name=name, node=entry.config)


def make_config(attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig) -> AttentionConfig:
    """Turn the ``attn`` node (or a plain mapping) into the variant's dataclass; types checked, unknown keys refused."""
    if isinstance(attn_cfg, AttentionConfig):
        return attn_cfg
    container = OmegaConf.to_container(attn_cfg, resolve=True) if isinstance(attn_cfg, DictConfig) else dict(attn_cfg)
    assert isinstance(container, dict)
    entry = _entry(str(container.get("name")))
    if isinstance(attn_cfg, DictConfig) and OmegaConf.get_type(attn_cfg) not in (dict, entry.config):
        chosen = OmegaConf.get_type(attn_cfg).__name__  # type: ignore[union-attr]
        raise ValueError(f"name: {entry.name!r} does not match the chosen attention ({chosen}); choose it with attn={entry.name}")
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


def checked_config(attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig, *, max_len: int, head_dim: int) -> AttentionConfig:
    """The typed settings, checked against the task's length and the head size; ValueError("key: rule") otherwise."""
    config = make_config(attn_cfg)
    config.check(max_len=max_len, head_dim=head_dim)
    return config


def build_attention(attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig, *, head_dim: int, num_heads: int, max_len: int) -> Attention:
    """Build the registered module.

    A dataclass is taken as already checked (a run's config passed ``config.validate``, and
    the model types ``attn`` once for all its layers); a mapping or DictConfig (tests, the
    bench, ``approx``) is typed and checked here first.
    """
    config = attn_cfg if isinstance(attn_cfg, AttentionConfig) else checked_config(attn_cfg, max_len=max_len, head_dim=head_dim)
    return _entry(config.name).module(config, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
