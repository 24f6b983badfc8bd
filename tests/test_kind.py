"""The leaderboard's ``kind`` column, smoke rows hidden from reports, and like-with-like ratios."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lra_bench.compose import compose_config
from lra_bench.leaderboard import main
from lra_bench.report.compare import device_kind
from lra_bench.results import COLUMNS, SCHEMA_VERSION
from lra_bench.run_kind import run_kind


@pytest.mark.parametrize(
    "overrides, kind",
    [
        ([], "full"),
        (["experiment=cpu_demo"], "full"),
        (["trainer=smoke"], "smoke"),
        (["data.limit_train=100"], "smoke"),
        (["trainer.steps=50", "trainer.warmup_steps=5"], "smoke"),
    ],
)
def test_kind_of_a_run(overrides, kind):
    assert run_kind(compose_config(overrides)) == kind


def test_kind_is_the_last_column():
    assert COLUMNS[-1] == "kind"


def write(path: Path, *rows: dict[str, object]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {c: "" for c in COLUMNS} | {"schema": SCHEMA_VERSION, "source": "run"} | r
            )
    return str(path)


def row(acc: float, **kw: object) -> dict[str, object]:
    base = {"task": "listops", "attn": "softmax", "test_acc": acc, "device": "cpu-2t"}
    return base | {"precision": "fp32", "step_ms": 10, "peak_mem_mb": 100, "batch_size": 32} | kw


def test_smoke_rows_are_hidden_unless_asked(tmp_path, capsys):
    lb = write(tmp_path / "lb.csv", row(0.4), row(0.9, kind="smoke", seed=1))
    assert main(["show", lb]) == 0
    out = capsys.readouterr().out
    assert "40.00 (n=1)" in out and "90.00" not in out
    assert main(["show", lb, "--smoke"]) == 0
    assert "65.00 ± " in capsys.readouterr().out
    only_smoke = write(tmp_path / "smoke.csv", row(0.9, kind="smoke"))
    assert main(["compare", lb, only_smoke]) == 2
    assert "1 smoke row(s) hidden; add --smoke" in capsys.readouterr().err
    assert main(["compare", lb, only_smoke, "--smoke"]) == 0


@pytest.mark.parametrize(
    "new, compared",
    [
        (row(0.5, step_ms=20, peak_mem_mb=50), True),
        (row(0.5, step_ms=20, peak_mem_mb=50, device="cpu-1t"), True),  # same kind: a CPU
        (row(0.5, step_ms=20, peak_mem_mb=50, device="NVIDIA H200"), False),
        (row(0.5, step_ms=20, peak_mem_mb=50, batch_size=4), False),
    ],
)
def test_compare_refuses_time_and_memory_ratios_across_setups(tmp_path, capsys, new, compared):
    base = write(tmp_path / "base.csv", row(0.4))
    assert main(["compare", base, write(tmp_path / "new.csv", new)]) == 0
    out = capsys.readouterr().out
    assert "+10.00" in out  # accuracies are always compared
    assert ("2.00× (step_ms)" in out and "0.50×" in out) == compared
    assert ("–†" in out and "† time and memory not compared" in out) == (not compared)


def test_device_kinds():
    assert device_kind("Tesla V100-SXM2-16GB") == device_kind("V100") == device_kind("V100x4")
    assert device_kind("cpu-1t") == device_kind("cpu-2tx2") == "cpu"
    assert device_kind("NVIDIA H200") != device_kind("V100")
