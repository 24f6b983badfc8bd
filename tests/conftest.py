"""Shared fixtures: one data cache for the whole test session, and run folders per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One intra-op thread: tiny tensors gain nothing from more, and on a loaded machine
# several threads per process can make small ops orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


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
