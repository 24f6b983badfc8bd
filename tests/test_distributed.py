"""One run on two CPU processes (torchrun, gloo) ends where the single-process run ends."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

COMMON = [
    "trainer=smoke", "trainer.steps=6", "trainer.batch_size=8", "trainer.eval_batch_size=5",
    "model.dropout=0", "attn=softmax", "attn.dropout=0", "data.gen_workers=1",
]  # fmt: skip


def launch(
    prefix: list[str], tmp_path, name: str, cache_dir, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    run_dir = tmp_path / name
    cmd = [
        *prefix,
        "-m",
        "lra_bench",
        *COMMON,
        *extra,
        f"paths.run_dir={run_dir}",
        f"paths.leaderboard={tmp_path / name}.csv",
    ]
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("test_acc=") == 1  # one report, from rank 0
    with open(tmp_path / f"{name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # only rank 0 writes the row
    return rows[0]


@pytest.mark.slow
@pytest.mark.parametrize("bucket", [False, True])
def test_two_gloo_ranks_match_one_process(bucket, tmp_path, cache_dir):
    extra = ("data.bucket=true", "data.bucket_window=3") if bucket else ()
    single = launch([sys.executable], tmp_path, "single", cache_dir, extra)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = launch(torchrun, tmp_path, "ddp", cache_dir, extra)
    assert ddp["val_acc"] == single["val_acc"] and ddp["test_acc"] == single["test_acc"]
    assert ddp["device"].endswith("x2")
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_batch_must_split_over_ranks_and_accumulation(monkeypatch, smoke_overrides):
    from lra_bench import train
    from lra_bench.compose import compose_config
    from lra_bench.config import ConfigError
    from lra_bench.distributed import DistInfo

    monkeypatch.setattr(
        train, "init_distributed", lambda device, *_: (DistInfo(0, 3, 0), torch.device("cpu"))
    )
    with pytest.raises(ConfigError, match="ranks x trainer.grad_accum"):
        train.run(compose_config([*smoke_overrides, "trainer.batch_size=4"]))
