"""The table commands' parts: the grid of a preset, run states from run folders, the step
estimate and its cache, the report's cells and the HTML page."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.types import RunMode

from lra_bench.benchmarking.measure import TrainStepCase
from lra_bench.report.render import Table
from lra_bench.report.stats import Stat
from lra_bench.table import estimate as est
from lra_bench.table.grid import _compose, hydra_context, job_overrides
from lra_bench.table.report import OUTSIDE, cell_text
from lra_bench.table.state import (
    DONE,
    FAILED,
    NOT_STARTED,
    RUNNING,
    STALE,
    STOPPED,
    metrics_progress,
    read_state,
)
from lra_bench.table.status import cell_line

# --- the grid -----------------------------------------------------------------------------------


def jobs(*overrides: str) -> list[list[str]]:
    with hydra_context():
        return job_overrides(_compose(overrides, RunMode.MULTIRUN))


def axes(grid: list[list[str]], key: str) -> list[str]:
    return list(
        dict.fromkeys(o.partition("=")[2] for job in grid for o in job if o.startswith(key + "="))
    )


def test_paper_presets_hold_their_grids() -> None:
    sky = jobs("experiment=skyformer_table1")
    assert len(sky) == 135
    assert axes(sky, "task") == ["listops", "text", "retrieval", "image", "pathfinder"]
    assert len(axes(sky, "attn")) == 9 and axes(sky, "seed") == ["0", "1", "2"]
    lra = jobs("experiment=lra_table1")
    assert "pathx" in axes(lra, "task") and len(lra) == 6 * 11 * 3
    assert len(jobs("experiment=cpu_table")) == 6


def test_command_line_replaces_an_axis_and_keeps_the_others() -> None:
    grid = jobs("experiment=skyformer_table1", "task=listops")
    assert len(grid) == 27 and axes(grid, "task") == ["listops"]
    grid = jobs("experiment=skyformer_table1", "attn=skyformer,softmax,linear", "seed=0")
    assert axes(grid, "attn") == ["skyformer", "softmax", "linear"]  # any attention can be a row
    assert len(grid) == 5 * 3 and axes(grid, "seed") == ["0"]
    assert all("experiment=skyformer_table1" in job for job in grid)


def test_attn_extra_adds_a_row_and_the_attn_list_replaces_the_rows() -> None:
    grid = jobs("experiment=skyformer_table1", "+attn_extra=linear", "task=listops")
    assert len(grid) == 30 and axes(grid, "attn")[-1] == "linear"
    assert axes(grid, "attn")[:9] == axes(jobs("experiment=skyformer_table1"), "attn")
    grid = jobs("experiment=cpu_table", "+attn_extra=[linear,softmax]")  # listed rows once
    assert axes(grid, "attn") == ["softmax", "skyformer", "nystromformer", "linear"]
    grid = jobs("experiment=cpu_table", "attn=softmax,linear")
    assert axes(grid, "attn") == ["softmax", "linear"]


@pytest.mark.slow
def test_attn_extra_leaves_the_tables_own_runs_where_they_are() -> None:
    from lra_bench.table.grid import expand

    plain = {(r.task, r.attn, r.seed): r for r in expand(["experiment=cpu_table"]).runs}
    extra = expand(["experiment=cpu_table", "+attn_extra=linear"]).runs
    assert [r.attn for r in extra].count("linear") == 2
    for run in extra:
        if run.attn != "linear":
            same = plain[(run.task, run.attn, run.seed)]
            assert (run.folder, run.digest) == (same.folder, same.digest)


def test_an_unknown_attention_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from lra_bench.table.__main__ import main

    assert main(["plan", "experiment=cpu_table", "attn=nosuch", "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "nosuch" in err


# --- run states ---------------------------------------------------------------------------------


def checkpoint(folder: Path, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(3)}, "progress": {"step": step}}, folder / "last.pt")


METRICS = "step,elapsed_s,loss,lr,tokens_per_s,val_acc\n"


def test_each_state_from_the_files_a_run_leaves(tmp_path: Path) -> None:
    assert read_state(tmp_path / "none", "h", 100).kind == NOT_STARTED
    done = tmp_path / "done"
    done.mkdir()
    (done / "results.json").write_text(
        json.dumps({"status": "complete", "config_hash": "h", "steps": 100, "test_acc": 0.5})
    )
    state = read_state(done, "h", 100)
    assert (state.kind, state.test_acc) == (DONE, 0.5)
    assert read_state(done, "other", 100).kind == STALE
    stopped = tmp_path / "stopped"
    checkpoint(stopped, 40)
    assert (read_state(stopped, "h", 100).kind, read_state(stopped, "h", 100).step) == (STOPPED, 40)
    (stopped / "error.txt").write_text("loss became nan at step 41; ...\n")
    state = read_state(stopped, "h", 100)
    assert (state.kind, state.step, state.error) == (FAILED, 40, "loss became nan at step 41; ...")
    running = tmp_path / "running"
    checkpoint(running, 20)
    lock = {"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}
    (running / "run.lock").write_text(json.dumps(lock))
    (running / "metrics.csv").write_text(
        METRICS + "10,5.0,1.0,0.1,100,\n20,10.0,0.9,0.1,100,\n20,,,,,0.625\n30,15.0,0.8,0.1,100,\n"
    )
    state = read_state(running, "h", 100)
    assert (state.kind, state.step, state.val_acc, state.holder) == (
        RUNNING,
        30,
        0.625,
        f"{socket.gethostname()}:{os.getpid()}",
    )
    assert state.eta_s == pytest.approx(70 * 0.5)


def test_a_lock_left_by_a_dead_process_is_not_running(tmp_path: Path) -> None:
    proc = subprocess.run(["true"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    checkpoint(tmp_path, 7)
    (tmp_path / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert proc.returncode == 0 and read_state(tmp_path, "h", 10).kind == STOPPED


def test_metrics_tail_of_a_long_file_and_damaged_files(tmp_path: Path) -> None:
    rows = "".join(f"{s},{s / 10},1.0,0.1,100,\n" for s in range(1, 5001))
    (tmp_path / "metrics.csv").write_text(METRICS + rows + "5000,,,,,0.5\n")
    progress = metrics_progress(tmp_path)
    assert (progress.step, progress.val_acc) == (5000, 0.5)
    assert progress.s_per_step == pytest.approx(0.1)
    (tmp_path / "metrics.csv").write_bytes(b"\xff\xfe garbage")
    assert metrics_progress(tmp_path).step is None
    (tmp_path / "last.pt").write_text("not a checkpoint")
    assert (
        read_state(tmp_path, "h", 10).kind == NOT_STARTED
    )  # no step can be read: nothing to resume


# --- status lines -------------------------------------------------------------------------------


def test_a_cell_line_aggregates_its_seeds(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lra_bench.table.state import RunState

    cfg = SimpleNamespace(trainer=SimpleNamespace(steps=100))
    runs = [SimpleNamespace(task="listops", attn="softmax", seed=s, cfg=cfg) for s in range(4)]
    states = [
        RunState(DONE, 100, 0.40),
        RunState(DONE, 100, 0.38),
        RunState(FAILED, 30, error="boom"),
        RunState(NOT_STARTED),
    ]
    line = cell_line(runs, states)  # type: ignore[arg-type]
    assert line.startswith("listops/softmax: done 2/4 (39.00 ± 1.41)")
    assert "seed 2 failed at step 30: boom" in line and line.endswith("not started: seed 3")


# --- the estimate -------------------------------------------------------------------------------


def tiny_case(batch: int, budget_s: float = 10.0) -> TrainStepCase:
    from dataclasses import asdict

    from lra_bench.config import ModelConfig, TrainerConfig

    task = {"name": "listops", "num_classes": 10, "max_len": 32, "vocab_size": 17, "dual": False}
    model = asdict(ModelConfig(dim=16, ffn_dim=32, num_layers=1, num_heads=2, classifier_dim=16))
    trainer = asdict(
        TrainerConfig(steps=1000, batch_size=batch, lr=1e-3, warmup_steps=2, eval_every=5)
    )
    return TrainStepCase("t", {"name": "softmax"}, task, model, trainer, 32, batch, "cpu",
                         warmup=1, repeats=1, time_limit_s=budget_s)  # fmt: skip


def test_a_measured_step_exact_at_the_batch_and_extrapolated_past_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(est, "die_with_parent", lambda: None)  # not this test process
    exact = est.measure_case(tiny_case(4))
    assert exact["measured_batches"] == [1, 2, 4] and not exact["extrapolated"]
    assert exact["step_ms"] > 0 and exact["peak_mb"] > 0
    cut = est.measure_case(tiny_case(64, budget_s=1e-6))  # batch 1 is always measured
    assert cut["extrapolated"] and cut["measured_batches"] == [1]
    line = est.Estimate("ok", 1.0, 1.0, (1, 2), True, micro_batch=32)
    assert line.basis() == "b1,2 -> 32" and est.Estimate("timeout").basis() == "not measured"


def test_the_line_through_two_batches_never_falls_below_the_larger() -> None:
    assert est._line(8, (1, 10.0), (4, 40.0)) == pytest.approx(80.0)
    assert est._line(8, (1, 50.0), (4, 40.0)) == pytest.approx(40.0)  # noise: a dearer small batch


def test_estimates_are_cached_per_config_and_device(tmp_path: Path) -> None:
    path = est.cache_path(tmp_path, "abc", "NVIDIA H100 80GB HBM3")
    assert path.name == f"v{est.VERSION}-abc-NVIDIA_H100_80GB_HBM3.json"
    path.parent.mkdir(parents=True)
    est.save(path, est.Estimate("ok", 12.5, 100.0, (1, 2), False, 3.0))
    assert est.load_cached(path) == est.Estimate("ok", 12.5, 100.0, (1, 2), False, 3.0, cached=True)
    path.write_text("{damaged")
    assert est.load_cached(path) is None
    est.save(path, est.Estimate("error", error="boom"))  # an error is measured again next time
    assert est.load_cached(path) is None
    est.save(path, est.Estimate("timeout"))  # and so is a config not measured within the budget
    assert est.load_cached(path) is None


# --- the report ---------------------------------------------------------------------------------


def test_report_cells_mark_a_published_figure_outside_the_seed_spread() -> None:
    text, delta, outside = cell_text(Stat(40.0, 1.0, 3), 38.0)
    assert text == f"40.00 ± 1.00 | 38.00 (+2.00){OUTSIDE}" and delta == 2.0 and outside
    text, _, outside = cell_text(Stat(40.0, 3.0, 3), 38.0)
    assert OUTSIDE not in text and outside is False
    assert cell_text(Stat(40.0, None, 1), 38.0)[2] is None  # one seed: no spread to judge by
    assert cell_text(None, 38.0)[0] == "– | 38.00"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
def test_the_html_page_renders_its_tables_offline(tmp_path: Path) -> None:
    from lra_bench.table.html import write_page

    table = Table(
        "cpu_table: test accuracy (%)",
        ["Attention", "ListOps", "Avg"],
        [["skyformer", "37.25 ± 0.50", "37.25"]],
    )
    path = write_page(tmp_path, "cpu_table", [table], [])
    assert "http" not in path.read_text()  # nothing to fetch
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<td>skyformer</td>" in dom and "37.25 ± 0.50" in dom
    assert "<h2>cpu_table: test accuracy (%)</h2>" in dom
