"""A tiny table end to end through the real commands: plan, launch, a run killed and one failing,
status in every state, a relaunch that finishes only what is missing, and the report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAINER = [
    "trainer=smoke", "trainer.steps=12", "trainer.batch_size=4", "trainer.warmup_steps=2",
    "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.lr=0.001",
    "data.train_size=64", "data.val_size=16", "data.test_size=16", "data.gen_workers=1",
]  # fmt: skip
GRID = ["experiment=cpu_table", "task=listops,pathfinder", "attn=softmax,skyformer", *TRAINER,
        "paths.leaderboard=lb.csv"]  # fmt: skip


def env(cache_dir: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip


def table(cwd: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lra_bench.table", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env(cache_dir), capture_output=True, text=True, timeout=600
    )


def launch(cwd: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lra_bench", "-m", *GRID, *overrides]
    return subprocess.run(
        cmd, cwd=cwd, env=env(cache_dir), capture_output=True, text=True, timeout=900
    )


def start_single(
    cwd: Path, cache_dir: Path, task: str, attn: str, seed: int, *extra: str
) -> subprocess.Popen:
    """The grid's run (task, attn, seed) on its own (the same folder as in the sweep; ``extra``
    settings must not name runs)."""
    single = [o for o in GRID if not o.startswith(("attn=", "task="))]
    cmd = [
        sys.executable,
        "-m",
        "lra_bench",
        *single,
        f"task={task}",
        f"attn={attn}",
        f"seed={seed}",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def folder(cwd: Path, task: str, attn: str, seed: int) -> Path:
    """The run's folder: every grid run's folder has the same name (its command-line overrides)."""
    names = {p.name for p in (cwd / "runs").glob("*/*/seed*/*")}
    assert len(names) == 1, names
    return cwd / "runs" / task / attn / f"seed{seed}" / names.pop()


def stop_after_checkpoint(proc: subprocess.Popen, run_dir: Path, sig: int) -> None:
    """Send ``sig`` as soon as the run's first checkpoint is there (mid-way: 12 steps, one per
    3)."""
    deadline = time.monotonic() + 300
    while not (run_dir / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run wrote no checkpoint"
        time.sleep(0.005)
    os.kill(proc.pid, sig)


def status_of(cwd: Path, cache_dir: Path, *extra: str) -> dict[str, str]:
    done = table(cwd, cache_dir, "status", *GRID, *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.split(":")[0]: line
        for line in done.stdout.splitlines()
        if line.count("/") and ": " in line
    }


def ensure_error_file(run_dir: Path, stderr: str) -> None:
    """Until failed runs keep their error themselves (error.txt), keep it here as they will."""
    if not (run_dir / "error.txt").exists():
        line = next(ln for ln in stderr.splitlines() if "written by another configuration" in ln)
        (run_dir / "error.txt").write_text(line.removeprefix("error: ") + "\n")


@pytest.mark.slow
def test_tiny_table_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    plan = table(tmp_path, cache_dir, "plan", *GRID, "--no-measure")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "8 runs (2 tasks x 2 attentions x 2 seeds)" in plan.stdout
    assert plan.stdout.count("not started") == 8 + 1  # the runs, then the count

    # seed 0 of every cell: ListOps first, then the rest with one run made to fail (a checkpoint of
    # another config in its folder)
    first = launch(tmp_path, cache_dir, "seed=0", "task=listops")
    assert first.returncode == 0, first.stderr[-3000:]
    bad = folder(tmp_path, "pathfinder", "skyformer", 0)
    bad.mkdir(parents=True)
    shutil.copy(folder(tmp_path, "listops", "softmax", 0) / "last.pt", bad / "last.pt")
    failing = launch(tmp_path, cache_dir, "seed=0")
    assert failing.returncode == 2, failing.stderr[-3000:]
    assert "grid cpu_table: 4 runs; 2 already complete (skipped), 2 to run" in failing.stdout
    assert (folder(tmp_path, "pathfinder", "softmax", 0) / "results.json").exists()
    ensure_error_file(bad, failing.stderr)

    # seed 1: one run paused while it trains (running), one killed mid-way (stopped)
    running = start_single(tmp_path, cache_dir, "listops", "softmax", 1)
    # stops itself at step 6 if the kill comes late (this process starved of CPU by other tests):
    # stopped mid-way either way, never finished
    killed = start_single(tmp_path, cache_dir, "listops", "skyformer", 1, "trainer.stop_at_step=6")
    try:
        stop_after_checkpoint(running, folder(tmp_path, "listops", "softmax", 1), signal.SIGSTOP)
        stop_after_checkpoint(killed, folder(tmp_path, "listops", "skyformer", 1), signal.SIGKILL)
        killed.wait(30)
        lines = status_of(tmp_path, cache_dir)
        assert lines["listops/softmax"].startswith("listops/softmax: done 1/2")
        assert (
            "seed 1 running (" in lines["listops/softmax"]
            and f":{running.pid})" in lines["listops/softmax"]
        )
        assert "seed 1 stopped at step " in lines["listops/skyformer"]
        assert "seed 0 failed" in lines["pathfinder/skyformer"]
        assert "written by another configuration" in lines["pathfinder/skyformer"]
        assert "not started: seed 1" in lines["pathfinder/softmax"]
    finally:
        running.kill()
        running.wait(30)

    # the problem fixed, the same command again finishes what is missing and nothing else
    (bad / "last.pt").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("results.json")}
    again = launch(tmp_path, cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "grid cpu_table: 8 runs; 3 already complete (skipped), 5 to run" in again.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # complete runs untouched
    lines = status_of(tmp_path, cache_dir)
    assert all(" done 2/2" in lines[c] for c in lines if c != "cpu_table"), lines

    check_report(tmp_path, cache_dir)


def check_report(cwd: Path, cache_dir: Path) -> None:
    """Every cell of the report is the mean and std of the leaderboard's rows of that cell."""
    report = table(cwd, cache_dir, "report", *GRID, "--format", "json")
    assert report.returncode == 0, report.stderr[-2000:]
    records = [
        r for t in json.loads(report.stdout) for r in t["records"] if r["table"] == "accuracy"
    ]
    with open(cwd / "lb.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for rec in (r for r in records if r["task"] != "avg"):
        accs = [
            100 * float(r["test_acc"])
            for r in rows
            if (r["task"], r["attn"]) == (rec["task"], rec["attn"])
        ]
        assert rec["n"] == 2
        assert rec["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-4)
        assert rec["std"] == pytest.approx(statistics.stdev(accs), abs=1e-4)
    assert len(records) == 2 * (2 + 1)  # 2 attentions x (2 tasks + the average)
