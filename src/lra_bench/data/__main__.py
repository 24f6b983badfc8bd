"""``python -m lra_bench.data task=<task> [overrides]``: prepare a task's data ahead of time.

Downloads nothing by itself; reads or generates the task's sources, fills the Arrow
cache and prints the split sizes and the cache folder. The config is validated as for a
run; a data or config problem prints ``error: <message>`` and exits with status 2.
Hydra writes no output folder or log here.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lra_bench.data import load_splits
from lra_bench.errors import DataError, error_status
from lra_bench.paths import conf_dir
from lra_bench.precheck import run_app


def _cache_folder(splits: dict) -> str:
    """The cache entry the splits were memory-mapped from (``-`` if held in memory)."""
    for ds in splits.values():
        files = getattr(ds, "cache_files", None)
        if files:
            return str(Path(files[0]["filename"]).resolve().parents[1])
    return "-"


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        splits = load_splits(cfg)
    except DataError as err:
        sys.exit(error_status(err))
    for name, ds in splits.items():
        print(f"{cfg.task.name} {name}: {len(ds)} examples")
    print(f"cache: {_cache_folder(splits)}")


def _quiet_hydra(argv: list[str]) -> list[str]:
    """Overrides that keep Hydra from writing run folders and logs (the user's own win)."""
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in argv if "=" in arg}
    extra = {
        "hydra.run.dir": ".",
        "hydra.output_subdir": "null",
        "hydra/job_logging": "none",
        "hydra/hydra_logging": "none",
    }
    if "-m" in argv or "--multirun" in argv:
        sweep = tempfile.mkdtemp(prefix="lra_bench_data_")
        atexit.register(shutil.rmtree, sweep, ignore_errors=True)
        extra.update({"hydra.sweep.dir": sweep, "hydra.sweep.subdir": "."})
    return [f"{key}={value}" for key, value in extra.items() if key not in given]


if __name__ == "__main__":
    sys.argv.extend(_quiet_hydra(sys.argv[1:]))
    run_app(main)
