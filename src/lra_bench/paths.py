"""Where the package finds its Hydra configs, installed or from a checkout."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The ``conf/`` folder: inside the installed package (wheel) or at the checkout's top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lra_bench configs not found next to {here}; reinstall the package")
