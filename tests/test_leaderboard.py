"""Leaderboard reports on hand-made CSVs and on the published tables."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest

from lra_bench.leaderboard import main
from lra_bench.report.load import load_csv
from lra_bench.report.plot import INSTALL_HINT
from lra_bench.report.show import show_tables
from lra_bench.results import COLUMNS, SCHEMA_VERSION

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
TASKS = ["listops", "text", "retrieval", "image", "pathfinder"]


def row(
    task: str, attn: str, acc: float | str = "", seed: int | str = 0, **kw: object
) -> dict[str, object]:
    r: dict[str, object] = {c: "" for c in COLUMNS}
    r.update(
        schema=SCHEMA_VERSION,
        source="run",
        task=task,
        attn=attn,
        seed=seed,
        test_acc=acc,
        device="cpu-2t",
        precision="fp32",
    )
    r.update(kw)
    return r


def write(path: Path, rows: list[dict[str, object]], columns: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(markdown: str, title_part: str) -> dict[str, list[str]]:
    """Rows (by first cell) of the Markdown table whose title contains ``title_part``."""
    blocks = [b for b in markdown.split("### ") if b.strip()]
    block = next(b for b in blocks if title_part.lower() in b.splitlines()[0].lower())
    lines = [ln for ln in block.splitlines() if ln.startswith("|")][2:]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return {c[0]: c[1:] for c in cells}


# --- show -------------------------------------------------------------------------------------


def test_mean_std_and_count_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(
        tmp_path / "lb.csv",
        [row("listops", "softmax", a, seed=s) for s, a in enumerate([0.30, 0.40, 0.50])],
    )
    code, out, _ = run(capsys, "show", str(f))
    assert code == 0
    cells = table_rows(out, "accuracy")["softmax"]
    assert cells[0] == "40.00 ± 10.00 (n=3)"
    assert cells[1:5] == ["–"] * 4  # missing tasks: a dash, never 0
    assert cells[5] == "40.00*"  # partial average, with its footnote
    assert "* partial" in out


def test_average_only_over_complete_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row(t, "softmax", 0.5 + 0.01 * i) for i, t in enumerate(TASKS)]
    rows += [row(t, "skyformer", 0.6) for t in TASKS[:3]]
    code, out, _ = run(capsys, "show", str(write(tmp_path / "lb.csv", rows)))
    table = table_rows(out, "accuracy")
    assert table["softmax"][-1] == "52.00"
    assert table["skyformer"][-1] == "60.00*"
    assert table["skyformer"][3:5] == ["–", "–"]


def test_devices_and_precisions_never_mixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        row("listops", "softmax", 0.30, seed=0, device="cpu-2t", step_ms=100),
        row("listops", "softmax", 0.50, seed=1, device="NVIDIA H200", step_ms=10),
        row(
            "listops",
            "softmax",
            0.70,
            seed=2,
            device="NVIDIA H200",
            precision="bf16-amp",
            step_ms=5,
        ),
    ]
    code, out, _ = run(capsys, "show", str(write(tmp_path / "lb.csv", rows)))
    assert code == 0
    titles = [ln for ln in out.splitlines() if ln.startswith("### Test accuracy")]
    assert len(titles) == 3
    assert "30.00 (n=1)" in out and "50.00 (n=1)" in out and "70.00 (n=1)" in out
    assert "(n=2)" not in out and "(n=3)" not in out  # nothing averaged across groups
    code, out, _ = run(
        capsys, "show", str(tmp_path / "lb.csv"), "--device", "h200", "--precision", "fp32"
    )
    assert [ln for ln in out.splitlines() if ln.startswith("### Test accuracy")] == [
        "### Test accuracy (%), source run, device NVIDIA H200, precision fp32"
    ]


def test_efficiency_absolute_and_relative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        row("text", "softmax", 0.6, step_ms=40, peak_mem_mb=2048, train_s=400),
        row("text", "skyformer", 0.6, step_ms=10, peak_mem_mb=512, train_s=100),
    ]
    code, out, _ = run(capsys, "show", str(write(tmp_path / "lb.csv", rows)), "--task", "text")
    assert code == 0
    assert table_rows(out, "Step time")["skyformer"] == ["10.00 (0.25×)"]
    assert table_rows(out, "Peak memory")["skyformer"] == ["0.50 (0.25×)"]
    assert table_rows(out, "Train time (min")["softmax"] == ["6.67 (1.00×)"]


def test_machine_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(
        tmp_path / "lb.csv",
        [row("listops", "softmax", a, seed=s) for s, a in enumerate([0.30, 0.40, 0.50])],
    )
    code, out, _ = run(capsys, "show", str(f), "--format", "json")
    records = json.loads(out)[0]["records"]
    first = records[0]
    assert (first["task"], first["mean"], first["std"], first["n"]) == ("listops", 40.0, 10.0, 3)
    assert next(r for r in records if r["task"] == "text")["mean"] is None
    _, out, _ = run(capsys, "show", str(f), "--format", "csv")
    assert next(csv.DictReader(out.splitlines()))["mean"] == "40.0"
    _, out, _ = run(capsys, "show", str(f), "--format", "latex")
    assert r"40.00 $\pm$ 10.00 (n=3)" in out and r"\begin{tabular}" in out


# --- published tables ----------------------------------------------------------------------------


def printed_averages(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, float]:
    code, out, _ = run(capsys, "show", str(PUBLISHED / name))
    assert code == 0
    return {attn: float(cells[-1]) for attn, cells in table_rows(out, "accuracy").items()}


SKYFORMER_AVG = {
    "softmax": 57.37,
    "kernelized": 58.56,
    "nystromformer": 58.93,
    "linformer": 54.69,
    "informer": 53.73,
    "performer": 58.00,
    "reformer": 58.99,
    "bigbird": 59.05,
    "skyformer": 59.39,
}
LRA_AVG = {
    "softmax": 54.39,
    "local": 46.06,
    "sparse": 51.24,
    "longformer": 53.46,
    "linformer": 51.36,
    "reformer": 50.67,
    "synthesizer": 52.88,
    "bigbird": 55.01,
    "linear": 50.55,
    "performer": 51.41,
}


def test_skyformer_paper_average_column(capsys: pytest.CaptureFixture[str]) -> None:
    got = printed_averages(capsys, "skyformer_paper.csv")
    assert got.keys() == SKYFORMER_AVG.keys()
    for attn, avg in SKYFORMER_AVG.items():
        assert got[attn] == pytest.approx(avg, abs=0.011), attn


def test_lra_paper_average_column(capsys: pytest.CaptureFixture[str]) -> None:
    got = printed_averages(capsys, "lra_paper.csv")
    for attn, avg in LRA_AVG.items():
        assert got[attn] == pytest.approx(avg, abs=0.011), attn
    # The paper prints 51.39 for Sinkhorn, but its five figures average to 51.48.
    assert got["sinkhorn"] == pytest.approx(51.48, abs=0.011)


def test_published_rows_use_the_user_schema() -> None:
    for name in ("skyformer_paper.csv", "lra_paper.csv"):
        records = load_csv(PUBLISHED / name)
        assert all(r.values["seed"] is None for r in records)
        accs = [r.values["test_acc"] for r in records if r.values["test_acc"] is not None]
        assert accs and all(0 < a < 1 for a in accs)
    table2 = [
        r
        for r in load_csv(PUBLISHED / "skyformer_paper.csv")
        if r.source == "skyformer_paper_table2"
    ]
    assert {r.device for r in table2} == {"V100"} and len(table2) == 10
    sky_text = next(r for r in table2 if (r.attn, r.task) == ("skyformer", "text"))
    assert sky_text.values["train_s"] == pytest.approx(1.02 * 3600)
    assert sky_text.values["peak_mem_mb"] == pytest.approx(1.59 * 1024)


def test_published_efficiency_table(capsys: pytest.CaptureFixture[str]) -> None:
    tables = show_tables(load_csv(PUBLISHED / "skyformer_paper.csv"))
    titles = [t.title for t in tables]
    assert titles[1].startswith("Train time (h") and "V100" in titles[1]
    rows = {r[0]: r[1:] for r in tables[1].rows}
    assert rows["softmax"] == [
        "2.24 (1.00×)",
        "4.30 (1.00×)",
        "8.33 (1.00×)",
        "4.22 (1.00×)",
        "2.57 (1.00×)",
    ]
    assert rows["skyformer"][1] == "1.02 (0.24×)"
    memory = {r[0]: r[1:] for r in tables[2].rows}
    assert memory["skyformer"][4] == "4.13 (0.72×)"


# --- compare --------------------------------------------------------------------------------------


def test_compare_deltas_spread_and_fail_below(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(
        tmp_path / "base.csv",
        [
            *(
                row("listops", "skyformer", a, seed=s, step_ms=20, peak_mem_mb=1000)
                for s, a in enumerate([0.38, 0.40, 0.42])
            ),
            row("text", "skyformer", 0.64, step_ms=50, peak_mem_mb=2000),
        ],
    )
    new = write(
        tmp_path / "new.csv",
        [
            *(
                row("listops", "skyformer", a, seed=s, step_ms=10, peak_mem_mb=500)
                for s, a in enumerate([0.35, 0.36, 0.37])
            ),
            row("text", "skyformer", 0.62, step_ms=50, peak_mem_mb=2000),
            row("image", "skyformer", 0.41),
        ],
    )
    code, out, _ = run(capsys, "compare", str(base), str(new))
    assert code == 0
    rows = table_rows(out, "against")
    listops = rows["ListOps"]
    assert listops[1:] == [
        "40.00 ± 2.00 (n=3)",
        "36.00 ± 1.00 (n=3)",
        "-4.00",
        "yes",
        "0.50× (step_ms)",
        "0.50×",
    ]
    assert rows["Text"][3:5] == ["-2.00", "n/a"]
    assert "Image" not in rows and "only in new (1): image/skyformer." in out
    code, _, err = run(capsys, "compare", str(base), str(new), "--fail-below", "3")
    assert code == 1 and "listops/skyformer -4.00" in err and "text" not in err
    code, _, _ = run(capsys, "compare", str(base), str(new), "--fail-below", "4.5")
    assert code == 0
    code, out, _ = run(capsys, "compare", str(base), str(new), "--format", "json")
    rec = json.loads(out)[0]["records"][0]
    assert rec["delta"] == pytest.approx(-4.0) and rec["beyond_spread"] is True


def test_compare_refuses_mixed_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(
        tmp_path / "base.csv",
        [
            row("listops", "softmax", 0.4, device="cpu-2t"),
            row("listops", "softmax", 0.5, device="H200"),
        ],
    )
    new = write(tmp_path / "new.csv", [row("listops", "softmax", 0.45)])
    code, _, err = run(capsys, "compare", str(base), str(new))
    assert code == 2 and "several groups" in err and "--base-device" in err
    code, out, _ = run(capsys, "compare", str(base), str(new), "--base-device", "cpu")
    assert code == 0 and "+5.00" in out


# --- plot -----------------------------------------------------------------------------------------


def test_plot_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chart.png"
    code, stdout, err = run(capsys, "plot", str(PUBLISHED / "skyformer_paper.csv"), "-o", str(out))
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "not plotted: kernelized" in err


def test_plot_points_from_published_tables() -> None:
    from lra_bench.report.plot import plot_data

    data = plot_data(load_csv(PUBLISHED / "skyformer_paper.csv"))
    points = {p.attn: p for s in data.series for p in s.points}
    assert set(points) == {"softmax", "skyformer"}
    assert points["softmax"].speed == pytest.approx(1.0)
    assert points["skyformer"].speed == pytest.approx(2.20, abs=0.01)
    assert points["skyformer"].acc == pytest.approx(59.39, abs=0.01)


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run(
        capsys, "plot", str(PUBLISHED / "skyformer_paper.csv"), "-o", str(tmp_path / "c.png")
    )
    assert code == 2
    assert err.strip() == f"error: {INSTALL_HINT}"


# --- malformed input ------------------------------------------------------------------------------


def malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> str:
    f = tmp_path / "bad.csv"
    f.write_text(text)
    code, out, err = run(capsys, "show", str(f))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(f) in err
    return err


def header() -> str:
    return ",".join(COLUMNS) + "\n"


def line(**kw: object) -> str:
    r = row("listops", "softmax", 0.4, **kw)
    return ",".join(str(r[c]) for c in COLUMNS) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"empty file"),
        ("a,b,c\n1,2,3\n", r"line 1: missing columns schema, source, time"),
        (header().replace(",step_ms", ""), r"line 1: missing columns step_ms"),
        (header() + line(test_acc="abc"), r"line 2, column 10 \(test_acc\): 'abc' is not a number"),
        (
            header() + line() + line(steps="12x"),
            r"line 3, column 7 \(steps\): '12x' is not a number",
        ),
        (
            header() + line(schema=2),
            r"line 2, column 1 \(schema\): schema version 2, this lra_bench reads version 1",
        ),
        (header() + line(test_acc=62.5), r"line 2, column 10 \(test_acc\): 62.5 is outside 0..1"),
        (header() + "1,run,,listops\n", rf"line 2: 4 fields, the header has {len(COLUMNS)}"),
        (header(), r"no result rows"),
    ],
)
def test_malformed_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    assert re.search(expected, malformed(tmp_path, capsys, text))


def test_missing_file_and_empty_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", str(tmp_path / "none.csv"))
    assert code == 2 and "no such file" in err
    f = write(tmp_path / "lb.csv", [row("listops", "softmax", 0.4)])
    code, _, err = run(capsys, "show", str(f), "--attn", "skyformer")
    assert code == 2 and "no rows left after --attn skyformer" in err


def test_a_column_added_later_reads_as_its_default_from_older_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written before a column with a default existed
    still load; a column without one is required."""
    import lra_bench.report.load as load
    from lra_bench.report import ReportError

    monkeypatch.setattr(load, "COLUMNS", [*COLUMNS, "parity"])
    monkeypatch.setattr(load, "TEXT_COLUMNS", (*load.TEXT_COLUMNS, "parity"))
    monkeypatch.setattr(load, "COLUMN_DEFAULTS", {"parity": "none"})
    (rec,) = load_csv(write(tmp_path / "old.csv", [row("listops", "softmax", 0.4)]))
    assert (rec.parity, rec.task, rec.device, rec.get("test_acc")) == (
        "none",
        "listops",
        "cpu-2t",
        0.4,
    )
    older = write(
        tmp_path / "older.csv",
        [row("listops", "softmax", 0.4)],
        columns=[c for c in COLUMNS if c != "device"],
    )
    with pytest.raises(ReportError, match="missing columns device"):
        load_csv(older)
