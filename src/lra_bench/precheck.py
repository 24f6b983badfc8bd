"""Check a single run's command line before Hydra starts, so a bad setting costs one line and no folder."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, validate

_NOISE = ("Config search path", "provider=", "Set the environment variable", "object_type=", "reference_type=")


def one_line(message: str) -> str:
    """Hydra/OmegaConf messages span several lines; keep the informative ones, joined."""
    lines = [ln.strip() for ln in message.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    return " ".join(kept).replace("full_key:", "(key:").rstrip() + (")" if "full_key:" in message else "")


def precheck_overrides(argv: Sequence[str]) -> str | None:
    """Compose and validate ``argv`` as a single run; the problem as one line, or None.

    Sweeps (``-m``), ``--help``, ``--cfg`` and other Hydra flags are left to Hydra itself.
    """
    if any(arg.startswith("-") for arg in argv):
        return None
    try:
        validate(compose_config(list(argv)))
    except ConfigError as err:
        return str(err)
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__
        return one_line(f"{err}\n{cause}" if cause is not None and str(cause) not in str(err) else str(err))
    return None
