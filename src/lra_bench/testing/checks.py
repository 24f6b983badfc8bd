"""The conformance checks (``lra_bench.testing``): one function per property, one message each.

Every check builds the attention afresh from its settings (``Subject.build``) on small random
inputs ``[batch=2, heads=2, n, head_dim=8]`` whose second sequence is partly padded.
Randomness is pinned the way the variants pin it: eval mode (sampling variants restart
their draws from ``cfg.seed``) and ``torch.manual_seed`` before each compared call.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from lra_bench.attention import REGISTRY, Attention, AttentionConfig, discover_plugins
from lra_bench.attention.registry import settings_class, typed_settings
from lra_bench.errors import ConformanceError

# the sequence length each task's model feeds its attention (Path-X, 16384, left out for time)
TASK_LENGTHS = {"listops": 2048, "text": 4096, "retrieval": 4096, "image": 1024, "pathfinder": 1024}
N, EXTRA, HEAD_DIM, MAX_LEN = 100, 37, 8, 256  # small inputs: n real + extra padded tokens


@dataclass
class Subject:
    """The attention under test: its class, settings dataclass and the settings to check it with."""

    label: str
    module: type[Attention]
    config: type[AttentionConfig]
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, attention: str | type[Attention], settings: dict[str, Any]) -> Subject:
        if isinstance(attention, str):
            discover_plugins()
            if attention not in REGISTRY:
                raise ConformanceError(
                    f"attention {attention!r} is not registered (is its package installed?)"
                )
            if not REGISTRY[attention].listed:
                raise ConformanceError(
                    f"attention {attention!r} stands for a target class: check that class, "
                    "check_attention(MyAttention)"
                )
            entry = REGISTRY[attention]
            return cls(attention, entry.module, entry.config, settings)
        try:
            return cls(attention.__qualname__, attention, settings_class(attention), settings)
        except ValueError as err:
            raise ConformanceError(
                f"{attention.__qualname__}: check 'config' failed: {err}"
            ) from None

    def fail(self, check: str, problem: str) -> ConformanceError:
        return ConformanceError(f"attention {self.label!r}: check {check!r} failed: {problem}")

    def typed(self, **overrides: Any) -> AttentionConfig:
        return typed_settings(self.config, {**self.settings, **overrides}, self.label)

    def build(
        self,
        *,
        max_len: int = MAX_LEN,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        **overrides: Any,
    ) -> Attention:
        """A fresh module (parameters and generators from
        ``torch.manual_seed(seed)``), in eval mode."""
        cfg = self.typed(**overrides)
        cfg.check(max_len=max_len, head_dim=HEAD_DIM)
        torch.manual_seed(seed)
        return self.module(cfg, head_dim=HEAD_DIM, num_heads=2, max_len=max_len).to(dtype).eval()


def inputs(
    seed: int, n: int = N, dtype: torch.dtype = torch.float64, scale: float = 1.0, batch: int = 2
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random q, k, v and a mask whose second sequence is padded after 70% of ``n``."""
    g = torch.Generator().manual_seed(seed)
    qkv = [
        scale * torch.randn(batch, 2, n, HEAD_DIM, generator=g, dtype=torch.float64).to(dtype)
        for _ in range(3)
    ]
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[-1, int(0.7 * n) :] = False
    return qkv, mask


def _pinned(attn: Attention, *args: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return attn(*args)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def check_config(s: Subject, invalid: Iterable[tuple[str, Any]] = ()) -> None:
    """The dataclass types with OmegaConf, accepts the given
    settings, refuses bad values with ``key: rule``."""
    try:
        OmegaConf.structured(s.config)
        s.typed().check(max_len=MAX_LEN, head_dim=HEAD_DIM)
    except Exception as err:  # noqa: BLE001 - any failure here is the finding
        raise s.fail(
            "config",
            f"the settings {s.settings} are refused or not typeable: {type(err).__name__}: {err}",
        ) from None
    names = {f.name for f in fields(s.config)}
    bad: list[tuple[str, Any]] = [("no_such_setting", 1), *invalid]
    if "dropout" in names:
        bad.append(("dropout", 1.5))
    for key, value in bad:
        try:
            s.typed(**{key: value}).check(max_len=MAX_LEN, head_dim=HEAD_DIM)
        except ValueError as err:
            message = str(err)
            if not message.startswith(f"{key}: ") or "\n" in message:
                raise s.fail(
                    "config",
                    f"{key}={value!r} is refused, but the message is not one line 'key: rule': "
                    f"{message!r}",
                ) from None
            continue
        raise s.fail(
            "config",
            f"{key}={value!r} is accepted; its check() should raise ValueError('{key}: <rule>')",
        )


def check_shape_dtype(s: Subject) -> None:
    """Output shape and dtype equal q's, finite, with and without a mask, in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        attn = s.build(dtype=dtype)
        (q, k, v), mask = inputs(0, dtype=dtype)
        for m in (mask, None):
            with torch.no_grad():
                out = attn(q, k, v, m)
            if out.shape != q.shape or out.dtype != dtype:
                raise s.fail(
                    "shape_dtype",
                    f"{dtype} inputs {tuple(q.shape)} gave {out.dtype} {tuple(out.shape)}",
                )
            if not bool(torch.isfinite(out).all()):
                raise s.fail(
                    "shape_dtype",
                    f"non-finite outputs ({dtype}, mask={'none' if m is None else 'given'})",
                )


def check_padding(s: Subject) -> None:
    """Appending padded tokens (loud random values) never changes the real tokens' outputs."""
    for seed in (0, 1, 2):
        attn = s.build()
        (q, k, v), mask = inputs(seed)
        pad, _ = inputs(seed + 50, n=EXTRA, scale=5.0)
        padded = [torch.cat([x, p], dim=2) for x, p in zip((q, k, v), pad, strict=True)]
        mask_padded = torch.cat([mask, torch.zeros(2, EXTRA, dtype=torch.bool)], dim=1)
        with torch.no_grad():
            short, long = (
                _pinned(attn, q, k, v, mask),
                _pinned(attn, *padded, mask_padded)[:, :, :N],
            )
        keep = mask[:, None, :, None].expand_as(short)
        if not torch.allclose(long[keep], short[keep], rtol=1e-7, atol=1e-9):
            raise s.fail(
                "padding",
                f"padded keys change real tokens' outputs (seed {seed}, max abs difference "
                f"{_max_diff(long[keep], short[keep]):.3g})",
            )


def _training(s: Subject, seed: int) -> tuple[Attention, list[torch.Tensor], torch.Tensor]:
    """A float32 module in training mode, and q, k, v (requiring gradients) and a mask."""
    attn = s.build(dtype=torch.float32).train()
    qkv, mask = inputs(seed, dtype=torch.float32)
    return attn, [t.requires_grad_() for t in qkv], mask


def check_gradients(s: Subject) -> None:
    """Training-mode backward gives finite, non-zero gradients
    to q, v (and k when ``uses_keys``) and every parameter."""
    attn, (q, k, v), mask = _training(s, 3)
    attn(q, k, v, mask).square().mean().backward()
    used = {"q": q, "k": k, "v": v} if attn.uses_keys else {"q": q, "v": v}
    for name, t in used.items():
        if (
            t.grad is None
            or not bool(torch.isfinite(t.grad).all())
            or float(t.grad.abs().sum()) == 0
        ):
            raise s.fail(
                "gradients",
                f"{name} gets no finite non-zero gradient"
                + (" (set uses_keys = False if k is ignored)" if name == "k" else ""),
            )
    if not attn.uses_keys and k.grad is not None and float(k.grad.abs().sum()) > 0:
        raise s.fail("gradients", "k gets a gradient although uses_keys is False")
    for name, p in attn.named_parameters():
        if p.grad is None or not bool(torch.isfinite(p.grad).all()):
            raise s.fail("gradients", f"parameter {name} gets no finite gradient")


def check_determinism(s: Subject) -> None:
    """In eval mode, the same inputs give bit-identical outputs on every call."""
    attn = s.build()
    (q, k, v), mask = inputs(4)
    with torch.no_grad():
        first, second = attn(q, k, v, mask), attn(q, k, v, mask)
    if not torch.equal(first, second):
        raise s.fail(
            "determinism",
            "two eval-mode calls on the same inputs differ (max abs difference "
            f"{_max_diff(first, second):.3g}); draw eval randomness from a generator seeded by "
            "cfg.seed",
        )


def check_resume(s: Subject) -> None:
    """Training-mode state (generators, buffers) saved in
    the state dict: a restored copy continues exactly."""
    (q, k, v), mask = inputs(5)
    first = s.build(seed=1).train()
    with torch.no_grad():
        _pinned(first, q, k, v, mask)  # advance any training stream
        state = copy.deepcopy(first.state_dict())
        expected = _pinned(first, q, k, v, mask)
        restored = s.build(seed=2).train()  # other initial parameters and generator seeds
        restored.load_state_dict(state)
        got = _pinned(restored, q, k, v, mask)
    if not torch.equal(expected, got):
        raise s.fail(
            "resume",
            "a module restored from the state dict computes another training step (max abs "
            f"difference {_max_diff(expected, got):.3g}); save the training generator's state "
            "(get_extra_state/set_extra_state)",
        )


def check_bf16(s: Subject) -> None:
    """bf16 inputs give bf16 outputs close (3%) to float64 on the same rounded inputs."""
    (q, k, v), mask = inputs(6, dtype=torch.bfloat16)
    attn = s.build()
    with torch.no_grad():
        ref = _pinned(attn, q.double(), k.double(), v.double(), mask)
        out = _pinned(attn.float(), q, k, v, mask)
    if out.dtype != torch.bfloat16 or not bool(torch.isfinite(out).all()):
        raise s.fail(
            "bf16",
            f"bf16 inputs gave {out.dtype} outputs"
            + ("" if out.dtype != torch.bfloat16 else " that are not finite"),
        )
    keep = mask[:, None, :, None].expand_as(out)
    err = float((out.double() - ref)[keep].norm() / ref[keep].norm())
    if err > 3e-2:
        raise s.fail(
            "bf16",
            f"bf16 outputs are {err:.1%} off the float64 ones (allowed 3%); compute "
            "softmax/exponentials in float32",
        )


def check_task_shapes(s: Subject) -> None:
    """Forward and backward in training mode at every
    task's length (batch 1, the last 100 tokens padded)."""
    for n in sorted(set(TASK_LENGTHS.values())):
        tasks = ", ".join(t for t, length in TASK_LENGTHS.items() if length == n)
        try:
            attn = s.build(max_len=n, dtype=torch.float32).train()
            (q, k, v), mask = inputs(7, n=n, dtype=torch.float32, batch=1)
            mask[0, n - 100 :] = False
            for t in (q, k, v):
                t.requires_grad_()
            out = attn(q, k, v, mask)
            out.square().mean().backward()
        except Exception as err:  # noqa: BLE001 - any failure at a task's shape is the finding
            raise s.fail(
                "task_shapes",
                f"n={n} ({tasks}): {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}",
            ) from None
        if not (
            bool(torch.isfinite(out).all())
            and q.grad is not None
            and bool(torch.isfinite(q.grad).all())
        ):
            raise s.fail("task_shapes", f"n={n} ({tasks}): non-finite outputs or gradients")


# operations after which a GPU's host waits for the device: a value read back, an output whose
# size depends on the data, or a Python number copied from host memory into a device tensor
_VALUE_READS = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select"}
_SIZED_BY_DATA = {"_unique", "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave"}


class _HostWaits(TorchDispatchMode):
    """Records the first operation that would make a GPU's host wait, with the line that
    issued it (run on the CPU, where the same operations are issued).

    A value read from a tensor made from no other tensor (a seed drawn from the host's
    generator) is not counted: the CPU cannot tell it from one drawn on the device."""

    def __init__(self) -> None:
        super().__init__()
        self.found: str | None = None
        self.lifted: set[tuple] = set()  # Python numbers made host tensors (``x[i] = 2.0``)
        self.fresh: set[tuple] = set()  # tensors made from no tensor (draws, constants)
        self.alive: list[torch.Tensor] = []  # both kept, so that their memory is not reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        if name == "lift_fresh" or not any(isinstance(x, torch.Tensor) for x in leaves):
            (self.lifted if name == "lift_fresh" else self.fresh).add(_memory(out))
            self.alive.append(out)
        elif self.found is None and self._waits(name, args, kwargs or {}):
            self.found = f"{func.__name__} at {_caller()}"
        return out

    def _waits(self, name: str, args: tuple, kwargs: dict) -> bool:
        if name in _VALUE_READS:
            return _memory(args[0]) not in self.fresh
        if name in _SIZED_BY_DATA:
            return "output_size" not in kwargs
        if name == "copy_" and _memory(args[1]) in self.lifted:  # written one element at a time
            return True
        indices = args[1] if name in ("index", "index_put", "index_put_") else ()
        return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


def _memory(t: Any) -> tuple:
    """Where a tensor's values lie (Python ids of tensors seen here are not stable)."""
    return (t.data_ptr(), t.dtype, tuple(t.shape)) if isinstance(t, torch.Tensor) else ()


def _caller() -> str:
    """The innermost line outside torch and this module."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and not frame.filename.endswith("checks.py"):
            return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} ({frame.line})"
    return "an unknown line"


def check_no_host_wait(s: Subject) -> None:
    """Forward and backward in training mode issue nothing a GPU's host must wait for (a value
    read back, a size set by the data, a number copied in from host memory): such a wait stalls
    every step on a GPU."""
    attn, (q, k, v), mask = _training(s, 8)
    attn(q, k, v, mask)  # lazily built state (generators, buffers) is made outside the record
    waits = _HostWaits()
    with waits:
        attn(q, k, v, mask).square().mean().backward()
    if waits.found:
        raise s.fail("no_host_wait", f"{waits.found} would make a GPU wait for the host")


CHECKS: dict[str, Callable[..., None]] = {
    "config": check_config,
    "shape_dtype": check_shape_dtype,
    "padding": check_padding,
    "gradients": check_gradients,
    "determinism": check_determinism,
    "resume": check_resume,
    "bf16": check_bf16,
    "task_shapes": check_task_shapes,
    "no_host_wait": check_no_host_wait,
}


def check_attention(
    attention: str | type[Attention],
    *,
    checks: Iterable[str] | None = None,
    invalid: Iterable[tuple[str, Any]] = (),
    **settings: Any,
) -> None:
    """Run the conformance checks on a registered name or an Attention class with ``settings``.

    ``invalid``: (key, value) pairs the settings dataclass must refuse
    with ``ValueError("key: rule")``. Raises ``ConformanceError`` (one
    line naming the attention and the check) on the first failure.
    """
    subject = Subject.of(attention, settings)
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise ConformanceError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    for name in names:
        if name == "config":
            check_config(subject, invalid)
        else:
            CHECKS[name](subject)
