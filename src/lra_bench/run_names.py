"""Run folder names from command-line overrides: one level deep, readable, safe everywhere.

A run's folder is ``<runs_dir>/<task>/<attn>/seed<seed>/<name>``, where ``<name>`` lists the
overrides that change results, sorted by key and joined by commas, or ``default`` when there
are none, so that no run's folder holds another's. Settings that only change how a run is
carried out (``RESULT_NEUTRAL``: threads, progress bar, device, loader processes, logging,
checkpoint cadence, where the data was read from; the same set ``config.config_hash`` leaves
out) and the ``paths``, ``logger`` and ``hydra`` settings never appear, so adding
``trainer.threads=1`` continues the same run. Names use letters, digits and ``. _ - = , [ ]``
only: a value holding anything else (``/``, ``:``, spaces...) is written with those replaced by
``_`` and a short hash of the whole value (``attn.target=my_module_Attn-1a2b3c4d``), a
``+``/``++`` prefix is dropped, and a name longer than ``MAX_NAME`` characters keeps its start
and a hash of the whole.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

from omegaconf import OmegaConf

RESOLVER = "lra_run_name"
RUN_DIR_RESOLVER = "lra_run_dir"
ROWS_RESOLVER = "lra_grid_rows"
DEFAULT_NAME = "default"
MAX_NAME = 120
# settings that do not change a run's results (``config_hash`` leaves them out too)
RESULT_NEUTRAL = (
    "trainer.progress",
    "trainer.log_every",
    "trainer.stop_at_step",
    "trainer.ckpt_every",
    "trainer.device",
    "trainer.threads",
    "trainer.dist_timeout_s",
    "data.loader_workers",
    "data.gen_workers",
    "data.root",
    "data.source",
)
# whole sections that never shape results: where files go, the tracker, Hydra's own settings,
# the rows a table preset adds (``+attn_extra``: each run has its own ``attn``)
NEUTRAL_SECTIONS = ("paths", "logger", "hydra", "attn_extra")
UNSAFE = re.compile(r"[^A-Za-z0-9._,\[\]=-]")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _readable(value: str) -> str:
    """The value itself when safe; else its safe form (a path: its last part) and a short hash."""
    shown = PurePath(value).name if "/" in value else value
    safe = UNSAFE.sub("_", shown)
    if safe == value:
        return value
    return f"{safe.strip('_') or 'value'}-{_digest(value)}"


def is_result_neutral(key: str) -> bool:
    """Whether an override of ``key`` (``+``/``~``
    prefixes allowed) leaves the results as they are."""
    key = key.lstrip("+~")
    section = re.split(r"[./]", key, maxsplit=1)[0]
    return key in RESULT_NEUTRAL or section in NEUTRAL_SECTIONS


def run_folder_name(overrides: Sequence[str], exclude_keys: Sequence[str] = ()) -> str:
    """The folder name of a run given its command-line overrides (``exclude_keys``: also left out,
    for the parts of the path named otherwise: task, attn, seed)."""
    items = []
    for override in sorted(overrides, key=lambda o: o.partition("=")[0].lstrip("+~")):
        key, _, value = override.partition("=")
        bare = key.lstrip("+~")
        if bare in exclude_keys or is_result_neutral(bare):
            continue
        name = UNSAFE.sub("_", bare)
        items.append(f"no-{name}" if key.startswith("~") else f"{name}={_readable(value)}")
    joined = ",".join(items) or DEFAULT_NAME
    if len(joined) > MAX_NAME:
        joined = f"{joined[: MAX_NAME - 9]}-{_digest(joined)}"
    return joined


def register_resolver() -> None:
    """Make ``${lra_run_name:<overrides>,<exclude keys>}`` available to the configs, and
    ``${lra_run_dir:<paths.run_dir>,<default folder>}`` (in ``hydra.run.dir``: with
    ``paths.run_dir`` set, Hydra's ``.hydra/`` and log go into that run folder too)."""
    if not OmegaConf.has_resolver(RUN_DIR_RESOLVER):
        OmegaConf.register_new_resolver(RUN_DIR_RESOLVER, lambda chosen, default: chosen or default)
    if not OmegaConf.has_resolver(ROWS_RESOLVER):
        OmegaConf.register_new_resolver(ROWS_RESOLVER, grid_rows)
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(
            RESOLVER, lambda overrides, exclude: run_folder_name(list(overrides), list(exclude))
        )


def grid_rows(rows: str, extra: Any = None) -> str:
    """A table preset's attentions (``a,b,c``) with the ``+attn_extra`` rows added at the end
    (one name, ``a,b`` or a list ``[a,b]``; names already listed are not repeated)."""
    listed = [r.strip() for r in str(rows).split(",") if r.strip()]
    if extra is None:
        return ",".join(listed)
    if isinstance(extra, str) or not isinstance(extra, Iterable):
        extra = str(extra).split(",")
    added = [str(n).strip() for n in extra if str(n).strip() and str(n).strip() not in listed]
    return ",".join(listed + list(dict.fromkeys(added)))
