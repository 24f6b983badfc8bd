"""The shared loop end to end on generated ListOps: smoke runs, rows, resume, signals, NaN guard."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra_bench.attention import available
from lra_bench.compose import compose_config
from lra_bench.results import COLUMNS
from lra_bench.train import RunError, run


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def small_attn(name: str) -> list[str]:
    """Keep sampling variants' feature counts below the smoke sequences' lengths."""
    cfg = compose_config([f"attn={name}"]).attn
    return [f"attn.{key}=16" for key in ("num_landmarks", "num_features", "proj_dim") if key in cfg]


@pytest.mark.parametrize("attn", available())
def test_smoke_run_per_attention_records_one_row(attn, smoke_overrides, tmp_path):
    result = run(compose_config([f"attn={attn}", *small_attn(attn), *smoke_overrides]))
    assert result["status"] == "complete"
    rows = read_rows(tmp_path / "leaderboard.csv")
    assert len(rows) == 1 and list(rows[0]) == COLUMNS
    row = rows[0]
    assert row["task"] == "listops" and row["attn"] == attn and row["steps"] == "6"
    assert (
        0.0 <= float(row["test_acc"]) <= 1.0
        and float(row["step_ms"]) > 0
        and int(row["params"]) > 0
    )
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "best.pt").exists()


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def assert_same_state(a: object, b: object, key: str) -> None:
    """Tensors equal bit for bit; dicts (a sampling variant's generator states) key by key."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), key
        for sub in a:
            assert_same_state(a[sub], b[sub], f"{key}.{sub}")
    else:
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    "attn, bucket", [("softmax", False), ("skyformer", False), ("skyformer", True)]
)
@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(attn, bucket, smoke_overrides, tmp_path):
    # deterministic mode: what makes the same comparison hold on a GPU too
    bucketing = (
        ["data.bucket=true", "data.bucket_window=3"] if bucket else []
    )  # stops inside a window
    base = [
        f"attn={attn}",
        *small_attn(attn),
        *smoke_overrides,
        *bucketing,
        "trainer.steps=8",
        "trainer.ckpt_every=100",
        "trainer.deterministic=true",
    ]
    straight = [*base, f"paths.run_dir={tmp_path / 'straight'}"]
    resumed = [*base, f"paths.run_dir={tmp_path / 'resumed'}"]
    run(compose_config(straight))
    first = run(compose_config([*resumed, "trainer.stop_at_step=5"]))
    assert first["status"] == "interrupted" and first["step"] == 5
    assert len(read_rows(tmp_path / "leaderboard.csv")) == 1  # an interrupted run writes no row
    second = run(compose_config(resumed))
    assert second["status"] == "complete"
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert_same_state(a[key], b[key], key)
    rows = read_rows(tmp_path / "leaderboard.csv")
    same = ("test_acc", "val_acc", "best_step", "config_hash")
    assert len(rows) == 2 and all(rows[0][key] == rows[1][key] for key in same)
    again = run(compose_config(resumed))  # a complete run is not repeated
    assert (
        again["test_acc"] == second["test_acc"]
        and len(read_rows(tmp_path / "leaderboard.csv")) == 2
    )


def test_checkpoint_from_another_config_is_refused(smoke_overrides):
    run(compose_config([*smoke_overrides, "trainer.stop_at_step=3"]))
    with pytest.raises(RunError, match="another configuration"):
        run(compose_config([*smoke_overrides, "trainer.lr=0.5"]))


def test_nan_loss_stops_with_a_clear_message_and_no_row(smoke_overrides, tmp_path):
    with pytest.raises(RunError, match="loss became nan"):
        run(
            compose_config(
                [
                    *smoke_overrides,
                    "trainer.lr=1e30",
                    "trainer.clip_value=null",
                    "trainer.warmup_steps=0",
                ]
            )
        )
    assert not (tmp_path / "leaderboard.csv").exists()


def test_nan_between_readings_names_its_step_and_the_checkpoint_before_it(
    smoke_overrides, tmp_path, monkeypatch
):
    """Losses are read only at logging/evaluation/checkpoint steps; a NaN at step 4 is found at
    step 5 and last.pt (step 3) holds finite weights from before it."""
    import lra_bench.train as train

    original, calls = train.train_step, []

    def blow_up_at_step_4(state, batches, micro_batches=1):
        stats = original(state, batches, micro_batches)
        calls.append(1)
        if len(calls) == 4:
            with torch.no_grad():
                for p in state.module.parameters():
                    p.fill_(float("nan"))
            stats.loss = stats.loss * float("nan")
        return stats

    monkeypatch.setattr(train, "train_step", blow_up_at_step_4)
    overrides = [
        *smoke_overrides,
        "trainer.log_every=5",
        "trainer.eval_every=100",
        "trainer.ckpt_every=3",
        "trainer.steps=9",
    ]
    with pytest.raises(
        RunError,
        match=r"loss became nan at step 4; the last good checkpoint is .*last\.pt \(step 3\)",
    ):
        run(compose_config(overrides))
    assert len(calls) == 5  # found at the next reading
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["progress"]["step"] == 3 and all(
        torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point()
    )


def test_each_step_writes_last_pt_at_most_once_and_evaluates_on_its_own_cadence(
    smoke_overrides, tmp_path, monkeypatch
):
    """Checkpoint every 4 steps, evaluate every 3, stop at step 8 (a checkpoint step): last.pt
    is written once at steps 4 and 8; resumed, once at the last step (9) and once marked
    complete; dev accuracy at steps 3, 6 and 9; readings at those steps and every 2."""
    from lra_bench import checkpoint
    from lra_bench.metrics_log import read_curve

    real, writes = checkpoint.save_atomic, []

    def counted(state, path, **kwargs):
        if Path(path).name == "last.pt":
            writes.append((state["progress"]["step"], state["complete"]))
        real(state, path, **kwargs)

    monkeypatch.setattr(checkpoint, "save_atomic", counted)
    cadence = [
        *smoke_overrides,
        "trainer.steps=9",
        "trainer.log_every=2",
        "trainer.eval_every=3",
        "trainer.ckpt_every=4",
    ]
    stopped = run(compose_config([*cadence, "trainer.stop_at_step=8"]))
    assert stopped["status"] == "interrupted" and writes == [(4, False), (8, False)]
    assert run(compose_config(cadence))["status"] == "complete"
    assert writes == [(4, False), (8, False), (9, False), (9, True)]
    curve = read_curve(tmp_path / "run")
    assert [step for step, _ in curve.val_acc] == [3, 6, 9]
    assert [step for step, _ in curve.loss] == [2, 3, 4, 6, 8, 9]  # a reading at each of those


def test_step_meter_means_over_steps_and_first_nonfinite_step():
    from lra_bench.distributed import DistInfo
    from lra_bench.step import NonFiniteLoss, StepMeter, StepStats

    meter = StepMeter(torch.device("cpu"))
    meter.add(StepStats(torch.tensor(1.0), torch.tensor(3), 4, 10), 1)
    meter.add(StepStats(torch.tensor(2.0), torch.tensor(1), 4, 7), 2)
    reading = meter.read(DistInfo())
    assert (reading.loss, reading.acc, reading.tokens, reading.steps) == (1.5, 0.5, 17, 2)
    for step, loss in ((3, 1.0), (4, float("inf")), (5, float("nan"))):
        meter.add(StepStats(torch.tensor(loss), torch.tensor(0), 4, 1), step)
    with pytest.raises(NonFiniteLoss, match="loss became inf at step 4"):
        meter.read(DistInfo())
    assert meter.steps == 0


def test_grad_accumulation_matches_full_batch_without_dropout(smoke_overrides, tmp_path):
    common = [
        *smoke_overrides,
        "model.dropout=0",
        "attn.dropout=0",
        "trainer.steps=3",
        "trainer.warmup_steps=0",
    ]
    run(compose_config([*common, f"paths.run_dir={tmp_path / 'full'}"]))
    run(compose_config([*common, "trainer.grad_accum=2", f"paths.run_dir={tmp_path / 'accum'}"]))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "accum")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compiled_run_matches_eager_and_says_so_in_its_row(smoke_overrides, tmp_path):
    """torch.compile (graph capture and autograd tracing; the aot_eager backend skips code
    generation, which takes minutes on a small CPU) trains to the eager run's weights."""
    common = [
        *smoke_overrides,
        "model.dropout=0",
        "attn.dropout=0",
        "trainer.steps=3",
        "trainer.warmup_steps=0",
        "trainer.eval_every=3",
    ]
    run(compose_config([*common, f"paths.run_dir={tmp_path / 'eager'}"]))
    run(
        compose_config(
            [
                *common,
                "trainer.compile=true",
                "trainer.compile_backend=aot_eager",
                f"paths.run_dir={tmp_path / 'compiled'}",
            ]
        )
    )
    a, b = final_weights(tmp_path / "eager"), final_weights(tmp_path / "compiled")
    assert a.keys() == b.keys()  # checkpoints hold the module itself, not the compiled wrapper
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    rows = read_rows(tmp_path / "leaderboard.csv")
    assert [r["compiled"] for r in rows] == ["False", "True"]


@pytest.mark.slow
def test_cli_sigterm_checkpoints_and_rerun_resumes(tmp_path, cache_dir):
    """The real command: SIGTERM mid-run leaves last.pt; the same command resumes and prints its
    row."""
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "lra_bench", "attn=skyformer", "attn.num_landmarks=16",
        "trainer=smoke", "trainer.steps=300", "trainer.ckpt_every=1000", "trainer.eval_every=1000",
        "data.gen_workers=1",
        f"paths.runs_dir={tmp_path / 'runs'}", f"paths.leaderboard={tmp_path / 'lb.csv'}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training has started
        if line.startswith("training "):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out  # saved, then not taken for success
    last = list((tmp_path / "runs").rglob("last.pt"))
    assert len(last) == 1 and not (tmp_path / "lb.csv").exists()
    step = torch.load(last[0], weights_only=True)["progress"]["step"]
    assert 0 < step < 300
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout and "test_acc=" in done.stdout
    assert len(read_rows(tmp_path / "lb.csv")) == 1


def test_sigusr1_checkpoints_then_reaches_the_launchers_handler(smoke_overrides, tmp_path):
    """A cluster launcher's SIGUSR1 handler (requeue) still runs, after last.pt is written."""
    import lra_bench.train as train

    calls: list[bool] = []
    previous = signal.signal(
        signal.SIGUSR1, lambda signum, frame: calls.append((tmp_path / "run" / "last.pt").exists())
    )
    original_save = train.checkpoint.save_atomic
    sent: list[bool] = []

    def save_and_signal_once(state, path, **kw):  # deliver SIGUSR1 during the first checkpoint
        original_save(state, path, **kw)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGUSR1)

    try:
        train.checkpoint.save_atomic = save_and_signal_once
        result = run(compose_config([*smoke_overrides, "trainer.steps=20"]))
    finally:
        train.checkpoint.save_atomic = original_save
        signal.signal(signal.SIGUSR1, previous)
    assert result["status"] == "interrupted" and result["signal"] == signal.SIGUSR1
    assert calls == [True]


@pytest.mark.slow
def test_peak_memory_is_this_runs_own(smoke_overrides):
    """Runs sharing a process (a sweep) do not inherit an earlier peak."""
    import numpy as np

    from lra_bench.runtime import peak_memory_mb

    before = peak_memory_mb(torch.device("cpu"))
    hog = np.ones(
        int(before + 800) * 2**20 // 8
    )  # raise the process's peak well above a smoke run's
    hog.fill(2.0)
    del hog
    result = run(compose_config(smoke_overrides))
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the peak can only be reset on Linux")
    assert result["peak_mem_mb"] < before + 700
