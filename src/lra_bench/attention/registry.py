"""Registry of attention variants: a name bound to its settings dataclass and its implementation.

Each variant's dataclass is also an option of Hydra's ``attn`` config group
(``register_attention_configs``), so ``attn=<name>`` composes it with its defaults and
Hydra checks types and keys as for every other group. Problems are raised as
``ValueError("<key>: <rule>")``; ``lra_bench.config.validate`` turns them into ConfigError.

Built-in variants register their settings (``settings/<variant>.py``, no torch import) with
``@register_settings(name, "module:Class")``; the implementing class is imported only when a
model is built (``Entry.module``), so composing a config or reporting a typo never imports
torch. Installed packages add variants through the ``lra_bench.attention`` entry-point group
(docs/adding_an_attention.md). They are discovered on first use of the registry
(``available``, a lookup, or ``register_attention_configs`` at start-up) and registered
like the built-ins: an entry point names either an ``Attention`` subclass, whose settings
are its ``Config`` class attribute (or which ``@register_attention`` already registered when
its module was imported), or a module whose import registers its variants with
``@register_attention``. A plugin that fails to import (an exception, or ``sys.exit``) is
reported in one line and skipped; two packages registering one name is a ConfigError naming
both.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lra_bench.attention.settings.base import AttentionConfig
from lra_bench.errors import ConfigError

if TYPE_CHECKING:
    from lra_bench.attention.base import Attention

GROUP = "lra_bench.attention"  # the entry-point group of attention plugins
BUILTIN = "lra_bench"  # the origin of the built-in variants
SettingsT = TypeVar("SettingsT", bound=type[AttentionConfig])


@dataclass(frozen=True)
class Entry:
    """A registered attention: its settings and where its implementing class lives."""

    name: str
    config: type[AttentionConfig]
    target: str  # module:Class of the implementation, imported when a model is built
    origin: str = (
        BUILTIN  # the package that registered it (a plugin: its distribution and entry point)
    )
    listed: bool = (
        True  # False for ``custom``: an option of the attn group, not a variant of its own
    )

    @property
    def module(self) -> type[Attention]:
        """The implementing class, its module imported on first use."""
        found = _CLASSES.get(self.name)
        if found is None:
            module_name, _, attr = self.target.partition(":")
            found = _CLASSES.setdefault(self.name, getattr(import_module(module_name), attr))
        return found


REGISTRY: dict[str, Entry] = {}
BROKEN: dict[str, str] = {}  # entry-point name -> why the plugin did not load
_CLASSES: dict[str, type[Attention]] = {}  # name -> its implementing class, once imported
_loading: list[str] = []  # the plugin being imported (the origin of what it registers)
_discovery: dict[str, Any] = {
    "done": False,
    "clash": None,
}  # discovery runs once; a name clash is raised on every use


def class_path(cls: type) -> str:
    """``module:Class``, as an entry point or ``attn.target`` names a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_settings(
    name: str, target: str, *, listed: bool = True
) -> Callable[[SettingsT], SettingsT]:
    """Decorator of a built-in variant's settings dataclass: ``name`` is implemented by
    ``target`` (``module:Class``), which is imported only when a model is built."""

    def wrap(config: SettingsT) -> SettingsT:
        _add(Entry(name, config, target, BUILTIN, listed))
        return config

    return wrap


def register_attention(
    name: str, config: type[AttentionConfig], *, listed: bool = True
) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator of a plugin's attention: ``@register_attention("favor", FavorConfig)``."""

    def wrap(module: type[Attention]) -> type[Attention]:
        origin = _loading[-1] if _loading else module.__module__.partition(".")[0]
        _add(Entry(name, config, class_path(module), origin, listed))
        _CLASSES.setdefault(name, module)
        return module

    return wrap


def _add(entry: Entry) -> None:
    """Register ``entry``; the same class twice is a no-op, another class under a taken name
    a ConfigError."""
    old = REGISTRY.get(entry.name)
    if old is not None and old.target != entry.target:
        raise ConfigError(
            f"attention {entry.name!r} is registered by both {old.origin} and {entry.origin}; "
            "uninstall one of them or rename one entry point"
        )
    REGISTRY.setdefault(entry.name, entry)


def available() -> list[str]:
    """The selectable variants, built-in and installed (``custom`` left out: it needs a target)."""
    discover_plugins()
    return sorted(name for name, entry in REGISTRY.items() if entry.listed)


def _entry(name: str) -> Entry:
    discover_plugins()
    if name not in REGISTRY:
        broken = f"; plugin {name!r} did not load: {BROKEN[name]}" if name in BROKEN else ""
        raise ValueError(
            f"name: unknown attention {name!r}{broken}; choose one of: {', '.join(available())}"
        )
    return REGISTRY[name]


def discover_plugins() -> None:
    """Import every installed ``lra_bench.attention`` entry point once; a broken one is reported and
    skipped."""
    if _discovery["clash"] is not None:
        raise _discovery["clash"]
    if _discovery["done"]:
        return
    from lra_bench.attention.settings import import_all

    import_all()  # the built-ins first: a plugin reusing one of their names is a clash
    _discovery["done"] = True
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        package = point.dist.name if point.dist else "an unknown package"
        origin = f"{package} (entry point {point.name} = {point.value})"
        try:
            with _origin(origin):
                _register_plugin(point, origin)
        except ConfigError as clash:
            _discovery["clash"] = clash
            raise
        except (Exception, SystemExit) as err:  # any failure of third-party code: report, go on
            why = _why_broken(err)
            BROKEN[point.name] = why
            print(
                f"warning: attention plugin {origin} not loaded ({why}); the other attentions are "
                "unaffected",
                file=sys.stderr,
            )


def _why_broken(err: BaseException) -> str:
    """One line for a plugin's failure; ``sys.exit`` on import is a failure like any other
    (Ctrl-C, a KeyboardInterrupt, is not caught: it still stops the program)."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r}) on import"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}".rstrip(": ")


@contextmanager
def _origin(origin: str) -> Iterator[None]:
    _loading.append(origin)
    try:
        yield
    finally:
        _loading.pop()


def _register_plugin(point: EntryPoint, origin: str) -> None:
    """A module registers on import; a class is registered under the entry point's name with its
    ``Config``."""
    target = point.load()
    if isinstance(target, ModuleType):
        return
    from lra_bench.attention.base import Attention  # a plugin's own module imports torch too

    if not (isinstance(target, type) and issubclass(target, Attention)):
        raise TypeError(f"{point.value} is neither a module nor an Attention subclass")
    if any(entry.target == class_path(target) for entry in REGISTRY.values()):
        return  # @register_attention ran on import
    _add(Entry(point.name, settings_class(target, point.name), class_path(target), origin))
    _CLASSES.setdefault(point.name, target)


def settings_class(module: type[Attention], name: str | None = None) -> type[AttentionConfig]:
    """The settings dataclass of an Attention class: the registered one, else its ``Config`` class
    attribute.

    ``name`` (a plugin's entry-point name): the ``Config``'s ``name`` field must default to it.
    """
    for entry in REGISTRY.values():
        if entry.target == class_path(module):
            return entry.config
    config = getattr(module, "Config", None)
    if not (
        isinstance(config, type) and is_dataclass(config) and issubclass(config, AttentionConfig)
    ):
        raise ValueError(
            f"{module.__qualname__} has no settings: give it a Config dataclass subclassing "
            "AttentionConfig, or register it with @register_attention"
        )
    default = next(f.default for f in fields(config) if f.name == "name")
    if name is not None and default != name:
        raise ValueError(
            f"{module.__qualname__}.Config.name defaults to {default!r}; it must be the entry "
            f"point's name {name!r}"
        )
    return config


def register_attention_configs() -> None:
    """Store every variant's dataclass as option ``<name>`` of the ``attn`` group (defaults = the
    dataclass's)."""
    discover_plugins()
    store = ConfigStore.instance()
    for name, entry in REGISTRY.items():
        store.store(group="attn", name=name, node=entry.config)


def make_config(attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig) -> AttentionConfig:
    """Turn the ``attn`` node (or a plain mapping) into the variant's dataclass; types checked,
    unknown keys refused."""
    if isinstance(attn_cfg, AttentionConfig):
        return attn_cfg
    container = (
        OmegaConf.to_container(attn_cfg, resolve=True)
        if isinstance(attn_cfg, DictConfig)
        else dict(attn_cfg)
    )
    assert isinstance(container, dict)
    entry = _entry(str(container.get("name")))
    if isinstance(attn_cfg, DictConfig) and OmegaConf.get_type(attn_cfg) not in (
        dict,
        entry.config,
    ):
        chosen = OmegaConf.get_type(attn_cfg).__name__  # type: ignore[union-attr]
        raise ValueError(
            f"name: {entry.name!r} does not match the chosen attention ({chosen}); choose it with "
            f"attn={entry.name}"
        )
    return typed_settings(entry.config, container, entry.name)


def typed_settings(
    config: type[AttentionConfig], values: Mapping[str, Any], owner: str
) -> AttentionConfig:
    """``values`` over the dataclass ``config``'s defaults: types checked, unknown keys refused
    (ValueError "key: rule")."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: not a setting of attention {owner!r} (settings: "
            f"{', '.join(sorted(known))})"
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config), dict(values))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ValueError(f"{key}: {str(err).splitlines()[0]}") from None
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, config)
    return obj


def checked_config(
    attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig, *, max_len: int, head_dim: int
) -> AttentionConfig:
    """The typed settings, checked against the task's length and the head size; ValueError("key:
    rule") otherwise."""
    config = make_config(attn_cfg)
    config.check(max_len=max_len, head_dim=head_dim)
    return config


def build_attention(
    attn_cfg: DictConfig | Mapping[str, Any] | AttentionConfig,
    *,
    head_dim: int,
    num_heads: int,
    max_len: int,
) -> Attention:
    """Build the registered module.

    A dataclass is taken as already checked (a run's config passed ``config.validate``, and
    the model types ``attn`` once for all its layers); a mapping or DictConfig (tests, the
    bench, ``approx``) is typed and checked here first.
    """
    config = (
        attn_cfg
        if isinstance(attn_cfg, AttentionConfig)
        else checked_config(attn_cfg, max_len=max_len, head_dim=head_dim)
    )
    return _entry(config.name).module(
        config, head_dim=head_dim, num_heads=num_heads, max_len=max_len
    )
