"""``attn=custom``: an attention class named by its import path, without packaging it.

    python -m lra_bench attn=custom attn.target=my_module:MyAttention +attn.settings.window=8

``target`` is ``module:Class`` (or ``module.Class``, as Hydra's ``_target_``) importable from
``PYTHONPATH``; the class is an ``Attention`` subclass whose settings dataclass is the one
``@register_attention`` gave it or its ``Config`` class attribute. ``settings`` holds the
target's own settings: free-form here, typed and checked against the target's dataclass
when the config is validated, so a bad target or setting stops the run before any work
with one line (``invalid setting attn.target: ...``, ``attn.settings.window: ...``).
``dropout`` and ``seed``, when set, are passed on as the target's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from lra_bench.attention.registry import register_settings, settings_class, typed_settings
from lra_bench.attention.settings.base import AttentionConfig

if TYPE_CHECKING:
    from lra_bench.attention.base import Attention


@register_settings("custom", "lra_bench.attention.custom:CustomAttention", listed=False)
@dataclass
class CustomConfig(AttentionConfig):
    name: str = "custom"
    target: str = ""  # module:Class of an Attention subclass on PYTHONPATH
    dropout: float | None = None  # None: the target's default
    seed: int | None = None  # None: the target's default
    settings: dict[str, Any] = field(default_factory=dict)  # the target's own settings

    def check(self, *, max_len: int, head_dim: int) -> None:
        target = self.target_config()
        try:
            target.check(max_len=max_len, head_dim=head_dim)
        except ValueError as err:
            raise ValueError(self._located(err)) from None

    def _located(self, err: ValueError) -> str:
        """The target's ``key: rule`` with the key as written in this config (``settings.<key>``, or
        dropout/seed)."""
        key = str(err).partition(":")[0]
        return (
            f"settings.{err}"
            if key in self.settings or key not in ("dropout", "seed")
            else str(err)
        )

    def target_class(self) -> type[Attention]:
        """The imported class; ValueError('target: ...') when it cannot be imported or is not an
        Attention."""
        module_name, sep, attr = (
            self.target.partition(":") if ":" in self.target else self.target.rpartition(".")
        )
        if not (module_name and attr and sep):
            raise ValueError(
                "target: give the attention class as module:Class on PYTHONPATH "
                f"(attn.target=my_module:MyAttention), got {self.target!r}"
            )
        try:
            found = getattr(import_module(module_name), attr)
        # noqa: BLE001 - user code: any import failure is reported in one line
        except Exception as err:
            why = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(
                f"target: cannot import {self.target!r} ({type(err).__name__}: {why}); is its "
                "folder on PYTHONPATH?"
            ) from None
        from lra_bench.attention.base import Attention  # torch: a target's module imports it too

        if not (isinstance(found, type) and issubclass(found, Attention)):
            raise ValueError(
                f"target: {self.target!r} is not a subclass of lra_bench.attention.Attention"
            )
        return found

    def target_config(self) -> AttentionConfig:
        """The target's settings dataclass filled from ``settings`` (and dropout, seed when set)."""
        cls = self.target_class()
        try:
            config = settings_class(cls)
        except ValueError as err:
            raise ValueError(f"target: {err}") from None
        values = {
            **self.settings,
            **{k: v for k, v in (("dropout", self.dropout), ("seed", self.seed)) if v is not None},
        }
        try:
            return typed_settings(config, values, self.target)
        except ValueError as err:
            raise ValueError(self._located(err)) from None
