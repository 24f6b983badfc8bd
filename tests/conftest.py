"""Shared fixtures: one data cache for the whole test session, and run folders per test."""

from __future__ import annotations

import importlib.util
import os
import runpy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# One intra-op thread: tiny tensors gain nothing from more, and on a loaded machine
# several threads per process can make small ops orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole run, shared by pytest-xdist's workers too: entries are built
    under a lock and renamed into place, so a worker reuses what another has built."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    path = base / "cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def smoke_overrides(tmp_path: Path, cache_dir: Path) -> list[str]:
    """Overrides for a seconds-long run that writes only under tmp_path."""
    return [
        "trainer=smoke",
        f"paths.cache_dir={cache_dir}",
        f"paths.run_dir={tmp_path / 'run'}",
        f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
        "data.gen_workers=1",
    ]


@pytest.fixture
def run_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``python -m <module> <argv>`` run in this process from ``tmp_path``: (status, err, out).

    The module's ``__main__`` block is what runs, so argv handling stays the command's own; a
    new process costs seconds of imports, worth it only where the process itself is under test.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # run_app sets it; restored afterwards

    def call(
        module: str, argv: list[str], env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        spec = importlib.util.find_spec(module)
        if spec.submodule_search_locations:  # a package runs its __main__ module
            spec = importlib.util.find_spec(module + ".__main__")
        monkeypatch.setattr("sys.argv", [spec.origin, *argv])  # as ``python -m`` sets argv[0]
        status = 0
        try:
            with warnings.catch_warnings():  # runpy's note when the module was imported before
                warnings.filterwarnings("ignore", ".* found in sys.modules", RuntimeWarning)
                runpy.run_module(module, run_name="__main__", alter_sys=False)
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else int(done.code is not None)
        finally:  # leave no trace of the app for the next test in this process
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
        captured = capsys.readouterr()
        return status, captured.err, captured.out

    return call
