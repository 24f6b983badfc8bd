"""Leaderboard rows: schema, header handling, and concurrent appends that never tear a row."""

from __future__ import annotations

import csv
import multiprocessing as mp
from pathlib import Path

import pytest

from lra_bench.results import COLUMNS, ResultsError, append_row


def row(i: int) -> dict:
    r = {c: f"v{i}" for c in COLUMNS}
    r["overrides"] = (
        f'attn=x,y trainer.lr=1e-4 note="quoted, {i}"'  # commas and quotes stay inside one cell
    )
    r["seed"] = i
    return r


def _append_many(path: str, worker: int, count: int) -> None:
    for j in range(count):
        append_row(path, row(worker * 1000 + j))


def test_header_written_once_and_rows_parse(tmp_path):
    path = tmp_path / "lb.csv"
    append_row(path, row(1))
    append_row(path, row(2))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == COLUMNS


@pytest.mark.slow
def test_concurrent_appends_leave_every_row_whole(tmp_path):
    path = str(tmp_path / "lb.csv")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400
    assert sorted(int(r["seed"]) for r in rows) == sorted(
        w * 1000 + j for w in range(8) for j in range(50)
    )
    assert all(len(r) == len(COLUMNS) and None not in r for r in rows)


def test_file_with_another_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "lb.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="another schema"):
        append_row(path, row(1))
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_unwritable_location_gives_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError) as err:
        append_row(Path(blocker) / "lb.csv", row(1))
    assert "\n" not in str(err.value) and "paths.leaderboard" in str(err.value)


def test_columns_and_numeric_fields_come_from_the_row_dataclass():
    from dataclasses import fields

    from lra_bench.results import NUMERIC_COLUMNS, TEXT_COLUMNS, LeaderboardRow

    assert COLUMNS == [f.name for f in fields(LeaderboardRow)]
    assert set(NUMERIC_COLUMNS) | set(TEXT_COLUMNS) == set(COLUMNS) and not set(
        NUMERIC_COLUMNS
    ) & set(TEXT_COLUMNS)
    assert {"val_acc", "test_acc", "step_ms", "tokens_per_s", "params"} <= set(NUMERIC_COLUMNS)
    assert {"task", "attn", "device", "precision", "commit"} <= set(TEXT_COLUMNS)
