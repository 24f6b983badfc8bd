"""Configuration problems cost one line and no folder: validation hooked into Hydra, and errors
made one line.

Hydra composes the run's config once; ``ValidateConfig`` (a Hydra callback listed in
``conf/config.yaml``) validates that same config before Hydra creates the run folder, and
``run_app`` prints any composition or validation problem as ``error: <one line>`` with
exit status 2 (``errors.error_status``, which every command's exit for an error goes through).
Sweeps (``-m``) are validated job by job when each run starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lra_bench.config import register_configs, validate
from lra_bench.errors import ConfigError, LraBenchError, closed_output_status, error_status
from lra_bench.typo_hints import unknown_override, unknown_setting

_NOISE = (
    "Config search path",
    "provider=",
    "Set the environment variable",
    "object_type=",
    "reference_type=",
)


class ValidateConfig(Callback):
    """Validate a single run's composed config before its folder exists (ranks from torchrun's
    WORLD_SIZE).

    Hydra turns an exception raised by a callback into a warning and goes on, so a problem
    ends the process here.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config, world_size=int(os.environ.get("WORLD_SIZE", "1")))
        except ConfigError as err:
            sys.exit(error_status(str(err)))


def one_line(message: str) -> str:
    """Hydra/OmegaConf messages span several lines; keep the informative ones, joined."""
    lines = [ln.strip() for ln in message.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    return " ".join(kept).replace("full_key:", "(key:").rstrip() + (
        ")" if "full_key:" in message else ""
    )


def describe(err: BaseException) -> str:
    """One line for a configuration problem: ours as is, Hydra's and OmegaConf's with their
    cause."""
    if isinstance(err, LraBenchError):
        return str(err)
    cause = err.__cause__
    return one_line(
        f"{err}\n{cause}" if cause is not None and str(cause) not in str(err) else str(err)
    )


def run_app(app: Callable[[], Any]) -> None:
    """Register the config schemas (attention plugins included), then run a ``@hydra.main`` app;
    a registration, composition or validation problem exits 2 after one line on stderr, and a
    closed output (``--help | head``) exits quietly (``errors.closed_output_status``).

    Hydra otherwise prints its own multi-line report; HYDRA_FULL_ERROR hands the exception
    to us instead (other failures then keep their full traceback).
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        typo = unknown_override(sys.argv[1:])  # a misspelt key: answered before any composition
        if typo is not None:
            sys.exit(error_status(typo))
        register_configs()
        app()
    except (HydraException, OmegaConfBaseException, LraBenchError) as err:
        message = describe(err)
        sys.exit(error_status(unknown_setting(message, sys.argv[1:]) or message))
    except BrokenPipeError:
        sys.exit(closed_output_status())
