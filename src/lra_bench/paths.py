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


def published_dir() -> Path:
    """The papers' rows (``results/published/``):
    inside the installed package or in the checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "published", here.parents[1] / "results" / "published"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lra_bench's published rows not found next to {here}; reinstall")


def published_names() -> list[str]:
    """Short names of the published tables (``skyformer_paper``, ``lra_paper``)."""
    try:
        return sorted(p.stem for p in published_dir().glob("*.csv"))
    except FileNotFoundError:
        return []
