"""The bench: rows, ratios and tables from one run, failures recorded, workers, train steps,
the GPU script."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lra_bench.attention import available
from lra_bench.benchmarking.__main__ import expand_shorthand, run
from lra_bench.benchmarking.measure import AttentionCase, measure, saved_for_backward_mb
from lra_bench.benchmarking.profiling import tensor_peak_mb
from lra_bench.benchmarking.tables import ATTENTION_COLUMNS, TRAIN_STEP_COLUMNS, fmt_ratio
from lra_bench.benchmarking.variants import BenchError, parse_entry, resolve
from lra_bench.benchmarking.worker import Worker
from lra_bench.paths import conf_dir
from lra_bench.runtime import PeakMemory, cpu_peak_supported

ROOT = Path(__file__).resolve().parents[1]
SMALL_SKY = "'skyformer:num_landmarks=16'"


def bench_cfg(tmp_path: Path, *overrides: str):
    """The bench config at tiny, in-process settings writing under tmp_path."""
    base = [
        f"out_dir={tmp_path}",
        "progress=false",
        "plot=false",
        "isolate=none",
        "threads=1",
        "repeats=1",
        "warmup=1",
        "quick=true",
    ]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("bench", overrides=[*base, *overrides])


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def table_rows(text: str, label: str) -> int:
    return sum(line.startswith(f"| {label} |") for line in text.splitlines())


def test_shorthand_turns_comma_lists_into_hydra_lists():
    argv = ["attn=softmax,softmax:impl=math", "n=64,128", "repeats=1"]
    assert expand_shorthand(argv) == [
        "attns=['softmax','softmax:impl=math']",
        "n=[64,128]",
        "repeats=1",
    ]
    assert expand_shorthand(["attns=[a,b]", "n=[1]"]) == ["attns=[a,b]", "n=[1]"]
    assert expand_shorthand(["-m", "n=1,2"]) == ["-m", "n=1,2"]


def test_entries_resolve_to_labelled_configs():
    assert parse_entry("softmax:impl=math") == ("softmax", {"impl": "math"}, "softmax-math")
    assert parse_entry("skyformer:num_landmarks=64:label=sky64")[2] == "sky64"
    every = resolve("all", dropout=0.0)
    assert [v.label for v in every] == [
        "softmax",
        "softmax-math",
        *(a for a in available() if a != "softmax"),
    ]
    math_row = every[1]
    assert (
        math_row.name == "softmax"
        and math_row.config["impl"] == "math"
        and math_row.config["dropout"] == 0.0
    )


def assert_math_path_memory(r: dict[str, str]) -> None:
    """SDPA's math path keeps exactly copies of q, k, v and the n x n weights (batch 4, 2 heads,
    d 32, fp32)."""
    n = int(r["n"])
    weights_mb = 8 * n * n * 4 / 2**20
    assert float(r["saved_mb"]) == pytest.approx((3 * 8 * n * 32 + 8 * n * n) * 4 / 2**20, abs=1e-4)
    # the scores, the weights and their gradient are alive together at some point
    assert 2 * weights_mb <= float(r["tensor_mem_mb"]) <= 6 * weights_mb + 1
    # all its own: the weights, and the copies of q, k, v its batched products make (the model's
    # strided views of one projection do not flatten batch and heads as views); q, k, v
    # themselves and the output are not saved
    assert float(r["own_saved_mb"]) == pytest.approx(float(r["saved_mb"]), abs=1e-4)
    shared = 4 * 8 * n * 32 * 4 / 2**20  # output and three input gradients
    assert float(r["own_tensor_mb"]) == pytest.approx(float(r["tensor_mem_mb"]) - shared, abs=1e-3)


@pytest.mark.slow
def test_attention_bench_rows_tables_and_ratios_from_one_run(tmp_path, capsys):
    cfg = bench_cfg(
        tmp_path, f"attns=[softmax,'softmax:impl=math',{SMALL_SKY}]", "n=[64,128]", "plot=true"
    )
    run(cfg)
    columns, rows = read_csv(tmp_path / "attention.csv")
    assert columns == ATTENTION_COLUMNS
    labels = ["softmax", "softmax-math", "skyformer-num_landmarks=16"]
    assert sorted((r["label"], int(r["n"])) for r in rows) == sorted(
        (lab, n) for lab in labels for n in (64, 128)
    )
    assert all(
        r["status"] == "ok" and float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0 for r in rows
    )
    assert all(
        r["batch"] == "4"
        and r["heads"] == "2"
        and r["head_dim"] == "32"
        and r["dtype"] == "float32"
        for r in rows
    )
    assert {r["attn"] for r in rows if r["label"] == "softmax-math"} == {"softmax"}
    for r in rows:
        base = next(b for b in rows if b["label"] == "softmax" and b["n"] == r["n"])
        assert float(r["fwdbwd_ratio"]) == pytest.approx(
            float(r["fwdbwd_ms"]) / float(base["fwdbwd_ms"]), rel=1e-3, abs=1e-3
        )
        assert float(r["fwd_ratio"]) == pytest.approx(
            float(r["fwd_ms"]) / float(base["fwd_ms"]), rel=1e-3, abs=1e-3
        )
        assert float(r["saved_ratio"]) == pytest.approx(
            float(r["saved_mb"]) / float(base["saved_mb"]), rel=1e-3, abs=1e-3
        )
        assert float(r["tensor_mem_ratio"]) == pytest.approx(
            float(r["tensor_mem_mb"]) / float(base["tensor_mem_mb"]), rel=1e-3, abs=1e-3
        )
        if r["label"] == "softmax-math":
            assert_math_path_memory(r)
        else:  # these keep q, k, v themselves, which are not their own
            assert float(r["own_saved_mb"]) < float(r["saved_mb"])
        assert float(r["worker_rss_mb"]) > float(r["peak_mem_mb"])  # the whole process
    out = capsys.readouterr().out
    for label in labels:
        # forward+backward, forward, saved for backward (all, own), tensor memory (all, own)
        assert table_rows(out, label) == 6
    assert (tmp_path / "attention.md").exists()
    assert (tmp_path / "attention.png").stat().st_size > 0


def test_failed_cases_are_recorded_and_longer_lengths_skipped(tmp_path, capsys):
    cfg = bench_cfg(
        tmp_path,
        "attns=[softmax,'skyformer:num_landmarks=200']",
        "n=[128,256]",
        "case_timeout_s=0.000001",
    )
    run(cfg)
    status = {
        (r["label"], int(r["n"])): r["status"] for r in read_csv(tmp_path / "attention.csv")[1]
    }
    label = "skyformer-num_landmarks=200"
    assert status == {
        ("softmax", 128): "timeout",
        (label, 128): "invalid",
        ("softmax", 256): "skipped",
        (label, 256): "timeout",
    }
    out = capsys.readouterr().out
    assert "| softmax | timeout | skipped |" in out


@pytest.mark.slow
def test_unknown_attention_is_one_line_listing_the_choices(tmp_path):
    with pytest.raises(BenchError) as err:
        run(bench_cfg(tmp_path, "attns=[softmax,nope]", "n=[64]"))
    message = str(err.value)
    assert (
        "\n" not in message and "nope" in message and all(name in message for name in available())
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lra_bench.bench", "attn=softmax,nope", "n=64"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope" in lines[0] and "skyformer" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no Hydra output folders


@pytest.mark.parametrize(
    "override, line",
    [
        ("mode=x", "mode: choose attention or train_step or data, got 'x'"),
        ("spread.window=0", "spread.window: must be >= 1, got 0"),
        ("spread.tolerance=0", "spread.tolerance: must be > 0, got 0"),
        ("dropout=1.0", "dropout: must be >= 0 and < 1, got 1"),
        ("n=[64,0]", "n: must be > 0, got [64, 0]"),
        ("n=[]", "n: give at least one sequence length"),
        ("train.seq_len=0", "train.seq_len: must be > 0, got 0"),
        ("data_split=test", "data_split: choose train or val, got 'test'"),
    ],
)
def test_a_bad_bench_value_is_one_line_naming_its_rule(override, line, tmp_path):
    with pytest.raises(BenchError) as err:
        run(bench_cfg(tmp_path, override))
    assert str(err.value) == line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, words",
    [
        ("heads=abc", ["heads=abc", "could not be converted to Integer"]),
        ("spred.window=3", ["unknown bench setting `spred.window`", "`spread.window`"]),
    ],
)
@pytest.mark.slow
def test_hydra_refuses_a_wrong_type_or_unknown_key_in_one_line(override, words, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lra_bench.bench", override],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert all(word in lines[0] for word in words), lines
    assert list(tmp_path.iterdir()) == []


def test_bench_defaults_are_written_once_in_the_dataclass():
    """conf/bench.yaml chooses config groups and Hydra's behaviour; every setting's default is
    BenchConfig's, and the composed config holds exactly its fields."""
    import yaml

    from lra_bench.benchmarking.config import BenchConfig

    written = yaml.safe_load((conf_dir() / "bench.yaml").read_text())
    assert set(written) == {"defaults", "hydra"}
    assert written["defaults"][0] == "bench_schema"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose("bench")
    assert list(composed) == list(BenchConfig.__dataclass_fields__)
    assert composed.spread.window == 5 and composed.n == [1024, 2048, 4096, 8192]


@pytest.mark.parametrize("task", ["listops", "retrieval"])
def test_train_step_mode_times_the_task_model(task, tmp_path, capsys):
    cfg = bench_cfg(
        tmp_path,
        "mode=train_step",
        f"task={task}",
        f"attns=[softmax,{SMALL_SKY}]",
        "train.seq_len=64",
        "train.batch_size=2",
    )
    run(cfg)
    columns, rows = read_csv(tmp_path / f"train_step_{task}.csv")
    assert columns == TRAIN_STEP_COLUMNS
    assert [r["label"] for r in rows] == ["softmax", "skyformer-num_landmarks=16"]
    assert all(
        r["status"] == "ok" and r["task"] == task and r["n"] == "64" and r["batch"] == "2"
        for r in rows
    )
    assert all(
        float(r["steps_per_s"]) > 0 and int(r["params"]) > 0 and float(r["saved_mb"]) > 0
        for r in rows
    )
    assert all(float(r["tensor_mem_mb"]) > 0 for r in rows)
    assert float(rows[0]["step_ratio"]) == 1.0 and float(rows[0]["tensor_mem_ratio"]) == 1.0
    out = capsys.readouterr().out
    assert table_rows(out, "softmax") == 1 and table_rows(out, "skyformer-num_landmarks=16") == 1


@pytest.mark.parametrize(
    "amp, amp_dtype, device, label",
    [
        (False, "fp16", "cpu", "float32"),
        (True, "bf16", "cpu", "bf16-amp"),
        (True, "auto", "cpu", "bf16-amp"),
        (True, "fp16", "cpu", "float32 (fp16 requested, CPU)"),
        (True, "fp16", "cuda", "fp16-amp"),  # whatever bf16 the GPU has
        (True, "bf16", "cuda", "bf16-amp"),
    ],
)
def test_train_step_precision_label_is_what_the_run_trains_in(amp, amp_dtype, device, label):
    from lra_bench.benchmarking.trained import precision_label

    assert precision_label({"amp": amp, "amp_dtype": amp_dtype}, device) == label


def test_a_train_step_table_names_the_fp16_its_cpu_cannot_train_in(tmp_path, capsys):
    cfg = bench_cfg(
        tmp_path,
        "mode=train_step",
        "attns=[softmax]",
        "train.seq_len=16",
        "train.batch_size=2",
        "train.amp=true",
        "run=['trainer.amp_dtype=fp16']",
        "device=cpu",
    )
    run(cfg)
    _, rows = read_csv(tmp_path / "train_step_listops.csv")
    assert [r["dtype"] for r in rows] == ["float32 (fp16 requested, CPU)"]
    assert "cpu-1t, float32 (fp16 requested, CPU)" in capsys.readouterr().out


def test_token_counts_are_real_and_padded_positions_of_both_documents():
    from lra_bench.step import token_counts

    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    pair = {"input_ids_1": torch.ones(2, 3), "mask_1": mask, "input_ids_2": torch.ones(2, 3)}
    assert token_counts(pair) == (3 + 6, 12)
    assert token_counts({"input_ids": torch.ones(2, 3), "mask": mask}) == (3, 6)


def test_train_step_mode_times_the_training_loops_own_step(tmp_path, monkeypatch, capsys):
    """The bench steps through step.train_step with the trainer's optimiser and clipping."""
    import lra_bench.step as step
    from lra_bench.config import TrainerConfig

    seen = []
    original = step.train_step

    def spy(state, batches, micro_batches=1):
        seen.append(
            (state.clip_value, state.optimizer.defaults["eps"], type(state.scheduler).__name__)
        )
        return original(state, batches, micro_batches)

    monkeypatch.setattr(step, "train_step", spy)
    run(
        bench_cfg(
            tmp_path, "mode=train_step", "attns=[softmax]", "train.seq_len=32", "train.batch_size=2"
        )
    )
    assert seen and set(seen) == {(TrainerConfig.clip_value, TrainerConfig.eps, "OneCycleLR")}


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux /proc/self/clear_refs")
def test_cpu_peak_memory_is_the_extra_resident_memory():
    memory = PeakMemory(torch.device("cpu"))
    memory.start()
    x = torch.ones(16 * 2**20)  # 64 MB, touched
    del x
    assert 60 < memory.peak_mb() < 72


FREED_MEMORY_SCRIPT = """
import sys, torch
from lra_bench.runtime import proc_status_kb
if sys.argv[1] == "training":
    from lra_bench.distributed import init_distributed
    init_distributed("cpu")
elif sys.argv[1] == "bench":
    from lra_bench.benchmarking.measure import _use
    _use("cpu")
x = torch.ones(4 * 2**20)  # 16 MB, touched
before = proc_status_kb("VmRSS")
del x
released = (before - proc_status_kb("VmRSS")) / 1024
subnormal = torch.tensor([1e-39]) * torch.tensor([1.0])
print(released, float(subnormal[0]) == 0.0)
"""


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux /proc/self/status")
@pytest.mark.parametrize("entry", ["training", "bench", "neither"])
def test_cpu_runs_hold_freed_memory_and_flush_subnormals(entry):
    """Training and the bench on a CPU keep a freed 16 MB tensor's memory (the next step's
    fresh tensors then need no page faults) and flush subnormal results to zero; a plain
    process hands the memory back and keeps subnormals (negative control)."""
    done = subprocess.run(
        [sys.executable, "-c", FREED_MEMORY_SCRIPT, entry],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "WORLD_SIZE": "1"},
    )
    released, flushed = done.stdout.split()
    if entry == "neither":
        assert float(released) > 15 and flushed == "False"
    else:
        assert float(released) < 1 and flushed == "True"


def test_cpu_tensor_peak_counts_the_tensors_alive_at_once():
    held = torch.ones(2**20)  # alive before: not counted

    def two_at_once() -> None:
        a = torch.ones(2**20)  # 4 MB
        b = torch.ones(2**21)  # 8 MB, while a is alive
        del a, b
        torch.ones(2**21)  # 8 MB again, after both were freed

    def one_at_a_time() -> None:
        for _ in range(3):
            torch.ones(2**21)

    cpu = torch.device("cpu")
    assert tensor_peak_mb(two_at_once, cpu, math.nan) == 12.0
    assert tensor_peak_mb(one_at_a_time, cpu, math.nan) == 8.0
    assert (
        tensor_peak_mb(two_at_once, torch.device("cuda"), 5.0) == 5.0
    )  # on a GPU: the allocator's own peak
    assert held.numel() == 2**20


def test_the_tensor_memory_run_is_skipped_when_it_would_not_fit_the_time_limit():
    def slow() -> None:
        time.sleep(0.2)

    cpu, now = torch.device("cpu"), time.monotonic()
    tight = measure(
        slow, cpu, warmup=0, repeats=3, stop_by=now + 0.5, deadline=now + 0.5, tensors=True
    )
    assert math.isnan(tight.tensor_mb) and tight.runs == 1
    now = time.monotonic()
    roomy = measure(
        slow, cpu, warmup=0, repeats=1, stop_by=now + 30, deadline=now + 30, tensors=True
    )
    assert roomy.tensor_mb == 0.0 and roomy.runs == 1  # sleeping allocates no tensor


def test_saved_for_backward_counts_each_storage_once():
    x = torch.ones(2**18, requires_grad=True)  # 1 MB
    assert saved_for_backward_mb(lambda: x * x) == 1.0  # x saved twice, one storage
    assert (
        saved_for_backward_mb(lambda: x.exp() * x) == 2.0
    )  # exp keeps its output, mul both operands
    assert saved_for_backward_mb(lambda: (x * 2).sum()) == 0.0  # a scalar product keeps nothing
    with torch.no_grad():
        assert saved_for_backward_mb(lambda: x.exp()) == 0.0


def case(attn: dict, n: int, **kw) -> AttentionCase:
    return AttentionCase(
        "x", attn, n, batch=4, heads=2, head_dim=32, device="cpu", warmup=0, repeats=1, **kw
    )


class Recording(torch.nn.Module):
    """An attention that keeps what it was handed and returns v."""

    def forward(self, q, k, v, mask=None):
        self.seen = (q, k, v)
        return v * 1.0


def test_attention_cases_hand_over_q_k_v_as_the_model_does():
    """The same strides and one shared storage as the model's projection gives its attention."""
    from lra_bench.benchmarking.measure import model_layout_inputs
    from lra_bench.model import MultiHeadAttention

    block = MultiHeadAttention(64, 2, Recording(), dropout=0.0, attn_fp32=False)
    block(torch.randn(3, 10, 64), None)
    shape = AttentionCase("x", {}, 10, batch=3, heads=2, head_dim=32, device="cpu")
    ours = model_layout_inputs(shape, torch.device("cpu"), torch.float32)
    for seen in (block.attention.seen, ours):
        assert len({t.untyped_storage().data_ptr() for t in seen}) == 1
    assert [t.shape for t in ours] == [t.shape for t in block.attention.seen]
    assert [t.stride() for t in ours] == [t.stride() for t in block.attention.seen]
    assert not ours[0].is_contiguous()


def test_forward_backward_stops_at_q_k_v_and_takes_the_parameters_gradients(monkeypatch):
    """Gradients are taken at q, k, v and the module's parameters, not accumulated: nothing lands
    in ``.grad`` of the tensor q, k, v view or of the parameters."""
    from lra_bench.benchmarking import measure

    taken, real_grad = [], torch.autograd.grad

    def grad(out, wrt, *args, **kwargs):
        found = real_grad(out, wrt, *args, **kwargs)
        taken.append((wrt, found))
        return found

    monkeypatch.setattr(torch.autograd, "grad", grad)
    ready = measure.prepare_attention(case({"name": "linformer", "proj_dim": 8}, 16))
    ready.timed["fwdbwd"]()
    ((wrt, found),) = taken
    q, k, v = ready.inputs
    assert wrt[:3] == (q, k, v) and len(wrt) > 3  # and Linformer's projections
    assert all(g is not None and g.abs().sum() > 0 for g in found)
    assert q._base.grad is None and all(p.grad is None for p in wrt[3:])


@pytest.mark.slow
def test_worker_records_oom_and_timeouts_and_replaces_a_killed_process():
    math = {"name": "softmax", "dropout": 0.0, "impl": "math"}
    worker = Worker(threads=1, grace_s=10)
    try:
        assert (
            worker.run(case(math, 2048, mem_limit_mb=64))["status"] == "oom"
        )  # n x n scores: 128 MB
        pid = worker.proc.pid
        slow = worker.run(case({"name": "skyformer", "num_landmarks": 16}, 256, time_limit_s=1e-6))
        assert slow["status"] == "timeout" and worker.proc.pid == pid  # checked between runs
        worker.grace_s = 0.0
        hung = worker.run(case(math, 2048, time_limit_s=0.01))
        assert hung["status"] == "timeout" and hung["error"].startswith("killed")
        ok = worker.run(case({"name": "softmax", "dropout": 0.0}, 64))
        assert ok["status"] == "ok" and ok["fwdbwd_ms"] > 0 and worker.proc.pid != pid
    finally:
        worker.close()


@pytest.mark.slow
def test_gpu_bench_script_runs_on_cpu_and_writes_csvs(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "BENCH_SIZE": "tiny", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_bench.sh"), str(out), "threads=1", "plot=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("attention.csv", "train_step_listops.csv"):
        rows = read_csv(out / name)[1]
        assert [r["label"] for r in rows] == ["softmax", "skyformer", "skyformer-reference"]
        assert all(r["status"] == "ok" and float(r["saved_mb"]) > 0 for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == [
        "bench"
    ]  # nothing else written in the working folder


@pytest.mark.parametrize("bucket", [False, True])
def test_data_mode_times_the_runs_loader_alone(bucket, tmp_path, cache_dir, capsys):
    from lra_bench.benchmarking.tables import DATA_COLUMNS

    run_overrides = [
        "trainer=smoke", f"paths.cache_dir={cache_dir}", "data.gen_workers=1",
        f"data.bucket={str(bucket).lower()}",
    ]  # fmt: skip
    args = expand_shorthand(
        ["mode=data", "task=listops", "batches=5", *[f"run.{o}" for o in run_overrides]]
    )
    assert args[-1].startswith("run=['trainer=smoke',")
    run(bench_cfg(tmp_path, *args))
    columns, rows = read_csv(tmp_path / "data_listops.csv")
    assert columns == DATA_COLUMNS and len(rows) == 1
    row = rows[0]
    assert (
        row["status"] == "ok"
        and row["bucket"] == str(bucket)
        and row["workers"] == "0"
        and row["repeats"] == "5"
    )
    assert float(row["ms_per_batch"]) > 0 and float(row["batches_per_s"]) > 0
    assert 0 < float(row["real_fraction"]) <= 1
    assert table_rows(capsys.readouterr().out, "listops") == 1


def test_data_mode_bad_run_override_is_one_line(tmp_path):
    with pytest.raises(BenchError, match="data.bucket_window"):
        run(bench_cfg(tmp_path, "mode=data", "run=['data.bucket_window=0']"))


def test_sticky_cuda_errors_are_told_from_others():
    from bench_fakes import STICKY
    from lra_bench.benchmarking.worker import is_sticky

    assert is_sticky(RuntimeError(STICKY)) and is_sticky(
        RuntimeError("an illegal memory access was encountered")
    )
    assert not is_sticky(
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    ) and not is_sticky(ValueError("bad shape"))


@pytest.mark.slow
def test_a_sticky_cuda_error_gets_the_next_case_a_fresh_worker():
    from bench_fakes import breaking_run

    softmax = {"name": "softmax", "dropout": 0.0}
    worker = Worker(threads=1, run=breaking_run)
    try:
        first = worker.run(case(softmax, 64))
        broken = worker.run(
            AttentionCase("assert", softmax, 64, batch=1, heads=1, head_dim=8, device="cpu")
        )
        assert (
            broken["status"] == "error"
            and "device-side assert" in broken["error"]
            and "restart" not in broken
        )
        after = worker.run(case(softmax, 64))
        assert (
            after["status"] == "ok" and after["pid"] != first["pid"]
        )  # a fresh process, not the broken one
    finally:
        worker.close()


@pytest.mark.slow
def test_a_bench_stopped_by_sigterm_still_writes_its_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    lengths = "n=32,64,128,256,512,1024,2048,4096"
    cmd = [sys.executable, "-m", "lra_bench.bench", "attn=softmax,linear", lengths,
           "repeats=50", "quick=true", "isolate=none", "threads=1", "progress=false",
           f"out_dir={out}"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while (
            not list(out.glob("attention-*.csv"))  # this run's file, written case by case
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    rows = read_csv(out / "attention.csv")[1]
    assert len(rows) == 16 and rows[0]["status"] == "ok" and rows[-1]["status"] == "skipped"
    table = (out / "attention.md").read_text()
    assert "| softmax |" in table and table in stdout
    assert (out / "attention.png").stat().st_size > 0


@pytest.mark.slow
def test_train_step_times_each_runs_own_attention_dropout_unless_told(tmp_path, capsys):
    """By default the rows train as the runs do (softmax's 0.1), and the table says so;
    ``dropout=0`` gives 0 to every variant, labelled as not as trained."""
    small = [
        "mode=train_step",
        f"attns=[softmax,{SMALL_SKY}]",
        "train.seq_len=32",
        "train.batch_size=2",
    ]
    rows = run(bench_cfg(tmp_path / "trained", *small))
    assert [float(r["attn_dropout"]) for r in rows] == [0.1, 0.0]
    out = capsys.readouterr().out
    assert "as trained" in out and "softmax 0.1" in out
    assert "softmax with dropout ran by blocks of query rows" in out  # detected, not assumed
    rows = run(bench_cfg(tmp_path / "zero", *small, "dropout=0"))
    assert [float(r["attn_dropout"]) for r in rows] == [0.0, 0.0]
    out = capsys.readouterr().out
    assert "Attention dropout 0 for every variant (not as trained" in out
    assert "blocks of query rows" not in out


def test_sdpa_math_fallback_is_detected_and_noted():
    from lra_bench.benchmarking.measure import kernels_seen
    from lra_bench.benchmarking.profiling import profile_run
    from lra_bench.benchmarking.tables import notes

    q = torch.randn(1, 2, 32, 8, requires_grad=True)

    def sdpa(p: float):
        return lambda: (
            torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=p).sum().backward()
        )

    fallback = kernels_seen(profile_run(sdpa(0.1), memory=False)[1])
    fused = kernels_seen(profile_run(sdpa(0.0), memory=False)[1])
    assert fallback == "sdpa-math" and "sdpa-math" not in fused and fused
    row = {"label": "softmax", "n": 32, "status": "ok", "kernels": fallback}
    assert any("math fallback" in line for line in notes([row], "softmax"))
    assert not any(
        "math fallback" in line for line in notes([{**row, "kernels": fused}], "softmax")
    )


def test_profiler_lines_are_silenced(capfd):
    from lra_bench.benchmarking.profiling import profile_run

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        torch.ones(3).sum()
    control = capfd.readouterr().err
    peak, names = profile_run(lambda: torch.ones(1000).sum(), memory=True)
    assert capfd.readouterr().err == "" and peak > 0 and "aten::sum" in names
    if "profiler_start" not in control:
        pytest.skip("this torch build prints nothing from its profiler")


def test_each_run_writes_new_timestamped_files_and_a_latest_copy(tmp_path, monkeypatch):
    from lra_bench.benchmarking import outputs

    (tmp_path / "attention.csv").write_text("an earlier run's table\n")  # before timestamps
    stamps = iter(["20260101-000000", "20260101-000001"])
    monkeypatch.setattr(
        outputs, "stamp", lambda seconds=None: next(stamps) if seconds is None else "old"
    )
    args = ["attns=[softmax]", "n=[16]"]
    run(bench_cfg(tmp_path, *args))
    run(bench_cfg(tmp_path, *args, "batch=1"))
    first, second = (read_csv(tmp_path / f"attention-20260101-00000{i}.csv")[1] for i in (0, 1))
    assert first[0]["batch"] == "4" and second[0]["batch"] == "1"
    assert read_csv(tmp_path / "attention.csv")[1][0]["batch"] == "1"  # the latest copy
    assert (tmp_path / "attention-old-earlier.csv").read_text() == "an earlier run's table\n"


@pytest.mark.slow
def test_interleaved_rounds_give_each_ratio_its_spread(tmp_path, capsys):
    """quick=false: after each length its variants run in rounds; each time ratio is the median
    of the round-by-round ratios, with their min and max; a spread beyond tolerance is said."""
    cfg = bench_cfg(
        tmp_path,
        f"attns=[softmax,{SMALL_SKY}]",
        "n=[32]",
        "quick=false",
        "spread.window=2",
        "spread.tolerance=100",
    )
    rows = run(cfg)
    assert all(r["rounds"] == 2 and r["spread_ok"] is True for r in rows)
    sky = rows[1]
    assert sky["fwdbwd_ratio_min"] <= sky["fwdbwd_ratio"] <= sky["fwdbwd_ratio_max"]
    assert sky["fwd_ratio_min"] <= sky["fwd_ratio"] <= sky["fwd_ratio_max"]
    assert rows[0]["fwdbwd_ratio"] == 1.0
    assert "median over interleaved rounds" in capsys.readouterr().out
    cfg = bench_cfg(
        tmp_path / "tight",
        f"attns=[softmax,{SMALL_SKY}]",
        "n=[32]",
        "quick=false",
        "spread.tolerance=1e-9",
        "spread.budget_s=0",
    )
    rows = run(cfg)
    assert all(r["rounds"] == 1 and r["spread_ok"] is False for r in rows)
    assert (
        "the time budget ended before the ratio's spread was within ±5%" in capsys.readouterr().out
    )


def test_rounds_stop_when_every_ratio_is_steady():
    from lra_bench.benchmarking.rounds import TimingGroup, steady, summarise

    case = AttentionCase("a", {}, 8, 1, 1, 4, "cpu")
    group = TimingGroup(
        (case,), "base", window=3, tolerance=0.05, budget_s=1, max_rounds=9, time_limit_s=9
    )
    base = [10.0, 20.0, 10.0, 10.0]
    steady_times = {"base": {"fwdbwd": base}, "a": {"fwdbwd": [9.0, 10.0, 5.0, 5.1]}}
    assert not steady({**steady_times, "a": {"fwdbwd": [5.0, 10.0, 5.0, 9.0]}}, group)
    assert steady(steady_times, group)  # the last 3 rounds: ratios 0.5, 0.5, 0.51
    figures = summarise({"times": steady_times, "rounds": 4, "converged": True}, group)["a"]
    assert figures["fwdbwd_ratio"] == 0.5 and figures["fwdbwd_ratio_max"] == 0.51
    assert figures["fwdbwd_ratio_min"] == 0.5 and figures["fwdbwd_ms"] == 5.1


def test_small_ratios_keep_three_significant_digits():
    """At long lengths 0.0216 and 0.0249 are 46x and 40x: two decimals would print both 0.02x."""
    assert [fmt_ratio(x) for x in (0.0216, 0.0249, 0.08943, 0.69, 1.456, 33.4)] == [
        "0.0216×",
        "0.0249×",
        "0.0894×",
        "0.69×",
        "1.46×",
        "33×",
    ]
    assert fmt_ratio("") == "–"
