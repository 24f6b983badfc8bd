"""Hydra sweeps through the real command: one row per job, job folders named by their overrides."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest


def sweep(tmp_path, cache_dir, *extra: str) -> list[dict[str, str]]:
    cmd = [
        sys.executable, "-m", "lra_bench", "-m", "attn=softmax,skyformer", "trainer=smoke",
        "attn.dropout=0", f"paths.leaderboard={tmp_path / 'lb.csv'}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "lb.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_folders(tmp_path) -> list[str]:
    return sorted(
        str(p.parent.relative_to(tmp_path / "runs"))
        for p in (tmp_path / "runs").rglob("results.json")
    )


@pytest.mark.slow
def test_basic_sweep_leaves_one_row_per_job(tmp_path, cache_dir):
    rows = sweep(tmp_path, cache_dir)
    assert sorted(r["attn"] for r in rows) == ["skyformer", "softmax"]
    assert job_folders(tmp_path) == [
        "listops/skyformer/seed0/attn.dropout=0,trainer=smoke",
        "listops/softmax/seed0/attn.dropout=0,trainer=smoke",
    ]


@pytest.mark.slow
def test_parallel_launcher_sweep(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    rows = sweep(tmp_path, cache_dir, "hydra/launcher=local_parallel")
    assert sorted(r["attn"] for r in rows) == ["skyformer", "softmax"]
    assert len(job_folders(tmp_path)) == 2
