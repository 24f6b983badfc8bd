"""A table's grid: every run ``python -m lra_bench -m <overrides>`` launches, with its config
and folder.

The grid is the experiment preset's ``hydra.sweeper.params`` combined with the command line the
way Hydra's basic sweeper combines them (a key given on the command line replaces the preset's
values for that key; the others stay). Each run's config is composed as the launcher composes
it (the hydra overrides, then the job's own overrides), and its folder is Hydra's
``hydra.sweep.dir/hydra.sweep.subdir`` for that job (``lra_bench.run_names``).

Runs that differ only in their seed are composed once and copied with the seed set: the seed
appears in the job's config only as ``seed`` (interpolations resolve lazily), so the copy is
the config the launcher composes for that seed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.config import config_hash, register_configs
from lra_bench.errors import ConfigError
from lra_bench.paths import conf_dir

SEED_KEY = "seed"


@dataclass(frozen=True)
class GridRun:
    """One run of the grid: its axes, the job's overrides, its config (no hydra node) and folder."""

    task: str
    attn: str
    seed: int
    overrides: tuple[str, ...]
    cfg: DictConfig
    folder: Path
    digest: str  # config_hash of the run: what results.json and last.pt record

    @property
    def cell(self) -> tuple[str, str]:
        return self.task, self.attn

    @property
    def shape_digest(self) -> str:
        """The config's hash with the seed left out: runs with equal ones cost the same."""
        unseeded = copy.deepcopy(self.cfg)
        unseeded.seed = 0
        return config_hash(unseeded)


@dataclass(frozen=True)
class Grid:
    """The runs of one command line, in the sweeper's order, and the experiment's name."""

    name: str
    runs: list[GridRun]
    master: DictConfig  # the multirun config (hydra node included)

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.runs))

    @property
    def attns(self) -> list[str]:
        return list(dict.fromkeys(r.attn for r in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(r.seed for r in self.runs))


@contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra initialised on the package's configs (as it is inside a running app of the
    package)."""
    register_configs()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(
        config_dir=str(conf_dir()), version_base="1.3", job_name="lra_bench"
    ):
        yield


def _compose(overrides: Sequence[str], mode: RunMode) -> DictConfig:
    return GlobalHydra.instance().hydra.compose_config(  # type: ignore[union-attr]
        config_name="config",
        overrides=list(overrides),
        run_mode=mode,
        with_log_configuration=False,
    )


def job_overrides(master: DictConfig) -> list[list[str]]:
    """Each job's overrides, as the basic sweeper makes them: the preset's sweeper params, then the
    command line's task overrides (a key given there replaces the preset's values)."""
    params = OmegaConf.select(master, "hydra.sweeper.params", default=None) or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(master.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(lines)
    return BasicSweeper.split_arguments(parsed, None)[0]


def _value(overrides: Sequence[str], key: str) -> str | None:
    for item in overrides:
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def _job_config(hydra_overrides: list[str], job: list[str]) -> DictConfig:
    """The job's config with its hydra node, as the launcher composes it."""
    return _compose([*hydra_overrides, *job], RunMode.MULTIRUN)


def _seeded(base: DictConfig, job: list[str], seed: int) -> DictConfig:
    """``base`` (a job of the same overrides but the seed) for this job's seed."""
    cfg = copy.deepcopy(base)
    cfg.seed = seed
    cfg.hydra.overrides.task = list(job)  # the launcher's job config holds its own overrides
    return cfg


def _run_of(cfg: DictConfig, job: list[str]) -> GridRun:
    folder = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    run_cfg = copy.deepcopy(cfg)
    with open_dict(run_cfg):
        del run_cfg["hydra"]
    return GridRun(
        task=str(run_cfg.task.name),
        attn=str(run_cfg.attn.name),
        seed=int(run_cfg.seed),
        overrides=tuple(job),
        cfg=run_cfg,
        folder=folder,
        digest=config_hash(run_cfg),
    )


def expand(arguments: Sequence[str]) -> Grid:
    """The grid of ``python -m lra_bench -m <arguments>``; a ConfigError when it has no grid."""
    with hydra_context():
        master = _compose(arguments, RunMode.MULTIRUN)
        jobs = job_overrides(master)
        hydra_overrides = list(master.hydra.overrides.hydra)
        composed: dict[tuple[str, ...], DictConfig] = {}
        runs = []
        for job in jobs:
            key = tuple(item for item in job if _value([item], SEED_KEY) is None)
            seed = _value(job, SEED_KEY)
            if key in composed and seed is not None and seed.lstrip("-").isdigit():
                cfg = _seeded(composed[key], job, int(seed))
            else:
                cfg = _job_config(hydra_overrides, job)
                composed.setdefault(key, cfg)
            runs.append(_run_of(cfg, job))
    name = str(master.get("experiment_name") or "grid")
    if len(runs) <= 1 and not OmegaConf.select(master, "hydra.sweeper.params"):
        raise ConfigError(
            f"{' '.join(arguments) or 'these overrides'} describe a single run, not a table: "
            "choose a table preset (experiment=skyformer_table1|lra_table1|cpu_table) or sweep "
            "axes (attn=a,b)"
        )
    return Grid(name, runs, master)
