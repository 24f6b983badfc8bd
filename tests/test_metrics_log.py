"""metrics.csv: one row per reading and per evaluation, resumes without duplicate steps."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lra_bench.compose import compose_config
from lra_bench.metrics_log import COLUMNS, MetricsCsv, read_curve
from lra_bench.train import run


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_header_is_exactly_the_shared_one():
    assert ",".join(COLUMNS) == "step,elapsed_s,loss,lr,tokens_per_s,val_acc"


def test_a_run_writes_loss_rows_per_log_step_and_accuracy_rows_per_evaluation(
    smoke_overrides, tmp_path
):
    run(compose_config(smoke_overrides))  # 6 steps, log_every 1, eval_every 3
    rows = rows_of(tmp_path / "run" / "metrics.csv")
    train = [r for r in rows if r["loss"]]
    evals = [r for r in rows if r["val_acc"]]
    assert [int(r["step"]) for r in train] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in evals] == [3, 6]
    assert all(not r["val_acc"] and float(r["tokens_per_s"]) > 0 for r in train)
    assert all(float(r["lr"]) == float(r["lr"]) and float(r["elapsed_s"]) > 0 for r in train)
    assert all(not (r["loss"] or r["lr"] or r["tokens_per_s"]) for r in evals)
    elapsed = [float(r["elapsed_s"]) for r in train]
    assert elapsed == sorted(elapsed)
    curve = read_curve(tmp_path / "run")
    assert [s for s, _ in curve.val_acc] == [3, 6] and len(curve.loss) == 6


def test_resume_appends_without_duplicate_steps(smoke_overrides, tmp_path):
    base = [*smoke_overrides, "trainer.ckpt_every=2"]
    run(compose_config([*base, "trainer.stop_at_step=5"]))  # last.pt at step 5
    path = tmp_path / "run" / "metrics.csv"
    with open(path, "a") as f:  # rows written after the checkpoint, then a crash mid-line
        f.write("7,1.0,0.5,0.001,10,\n8,1.1,0.")
    run(compose_config(base))
    steps = [(int(r["step"]), bool(r["val_acc"])) for r in rows_of(path)]
    assert len(steps) == len(set(steps))
    assert [s for s, ev in steps if not ev] == [1, 2, 3, 4, 5, 6]
    assert [s for s, ev in steps if ev] == [3, 6]


def test_a_foreign_file_is_moved_aside_not_trusted(tmp_path):
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")
    writer = MetricsCsv(tmp_path, resume_step=10)
    writer.log({"val/acc": 0.5}, 10)
    writer.finish()
    assert (tmp_path / "metrics.csv.old").read_text() == "a,b\n1,2\n"
    assert rows_of(tmp_path / "metrics.csv")[0]["val_acc"] == "0.5"


def test_reading_a_run_without_metrics_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_curve(tmp_path)


def test_curves_plots_several_runs(tmp_path):
    from lra_bench.leaderboard import main

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        MetricsCsv(tmp_path / name).finish()
        with open(tmp_path / name / "metrics.csv", "a") as f:
            f.write("10,1.5,2.3,0.001,100,\n10,1.5,,,,0.25\n20,3.0,2.1,0.001,100,\n")
    out = tmp_path / "curves.png"
    assert main(["curves", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["curves", str(tmp_path / "missing"), "-o", str(out)]) == 2


def test_the_job_log_gets_whole_lines_and_a_bars_last_state(tmp_path, capsys):
    import sys

    from lra_bench.joblog import mirror_to_job_log

    log = tmp_path / "lra_bench.log"
    with mirror_to_job_log(log):
        print("training listops/softmax")
        sys.stderr.write("\rbar 1/3\rbar 2/3\rbar 3/3\n\rcleared 1/2\r        \r")
        print("error: half", end="")
    assert log.read_text() == "training listops/softmax\nbar 3/3\nerror: half\n"
    assert "training listops/softmax" in capsys.readouterr().out
