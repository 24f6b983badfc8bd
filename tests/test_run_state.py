"""Run state under damage: the final weights kept, one leaderboard row whatever the stop point,
checkpoints checked before they are trusted, and one line (no traceback) for each failure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import lra_bench.train as train
from lra_bench import checkpoint
from lra_bench.compose import compose_config
from lra_bench.train import main, run


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same(a: object, b: object, key: str = "") -> None:
    """Nested checkpoint content equal bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), key
        for sub in a:
            assert_same(a[sub], b[sub], f"{key}.{sub}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), key
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{key}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), key
    else:
        assert a == b, key


# --- the final weights -----------------------------------------------------------------------


def test_complete_last_pt_holds_the_last_step_and_best_pt_the_best(
    smoke_overrides, tmp_path, monkeypatch
):
    """Testing best.pt (step 3 here) must not leak into the complete last.pt (step 6)."""
    reference = tmp_path / "reference"  # the same run stopped right after its last step
    run(compose_config([*smoke_overrides, f"paths.run_dir={reference}", "trainer.stop_at_step=6"]))
    real, calls = train.evaluate, []

    def dev_best_at_step_3(*args, **kwargs):
        acc = real(*args, **kwargs)
        calls.append(acc)
        return {1: 0.9, 2: 0.1}.get(len(calls), acc)  # dev at steps 3 and 6, then the test

    monkeypatch.setattr(train, "evaluate", dev_best_at_step_3)
    result = run(compose_config(smoke_overrides))
    assert result["status"] == "complete" and result["best_step"] == 3 and len(calls) == 3
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    best = checkpoint.load(tmp_path / "run" / "best.pt")
    expected = checkpoint.load(reference / "last.pt")
    assert last["complete"] and last["progress"]["step"] == 6 and best["step"] == 3
    for key in ("model", "optimizer", "scheduler"):
        assert_same(last[key], expected[key], key)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


# --- one row whatever the stop point ----------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no handler catches a BaseException)."""


KILL_POINTS = ("testing", "results.json written", "row appended", "last.pt marked complete")


def kill_at(monkeypatch, point: str) -> None:
    """Stop the run at ``point`` of the test / results / append / completion sequence."""

    def after(name: str, here: str, only=lambda *a, **k: True) -> None:
        real = getattr(train, name)

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            if here == point and only(*args, **kwargs):
                raise Killed(point)
            return out

        monkeypatch.setattr(train, name, wrapped)

    def before_testing(*args, **kwargs):
        raise Killed(point)

    if point == "testing":
        monkeypatch.setattr(train, "test_best", before_testing)
    after("atomic_write_json", "results.json written")
    after("append_row", "row appended")
    after("save_last", "last.pt marked complete", only=lambda *a, **k: k.get("complete"))


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_stop_at_any_point_of_recording_leaves_exactly_one_row(
    point, smoke_overrides, tmp_path, monkeypatch
):
    run_dir, board = tmp_path / "run", tmp_path / "leaderboard.csv"
    first = run(compose_config([*smoke_overrides, "trainer.stop_at_step=6"]))  # trained, not tested
    assert first["status"] == "interrupted" and not board.exists()
    with monkeypatch.context() as patch:
        kill_at(patch, point)
        with pytest.raises(Killed):
            run(compose_config(smoke_overrides))
    tested = json.loads((run_dir / "results.json").read_text()) if point != "testing" else None
    result = run(compose_config(smoke_overrides))  # the same command again
    again = run(compose_config(smoke_overrides))  # and once more: reported, not repeated
    rows = read_rows(board)
    assert len(rows) == 1, point
    saved = json.loads((run_dir / "results.json").read_text())
    last = checkpoint.load(run_dir / "last.pt")
    assert last["complete"] and rows[0]["run_id"] == saved["run_id"] == last["progress"]["run_id"]
    assert all(rows[0][k] == str(v) for k, v in saved.items() if k != "status")
    assert result["run_id"] == again["run_id"] == saved["run_id"]
    if tested is not None:  # recorded before the stop: not tested again, the same numbers
        assert saved == tested


def test_rows_of_other_runs_are_appended_and_the_same_run_is_not(tmp_path):
    from lra_bench.results import COLUMNS, append_row

    def row(run_id: str) -> dict:
        return {c: "x" for c in COLUMNS} | {"run_id": run_id}

    board = tmp_path / "lb.csv"
    assert append_row(board, row("0" * 16)) and append_row(board, row("1" * 16))
    assert not append_row(board, row("0" * 16))
    assert [r["run_id"] for r in read_rows(board)] == ["0" * 16, "1" * 16]


# --- damaged, missing and foreign files: one line, nothing changed ------------------------------


def failing(capsys, overrides: list[str]) -> str:
    """Run the command's entry point; expect status 2 and one line on stderr; return it."""
    status = main(compose_config(overrides))
    out, err = capsys.readouterr()
    err = err.split("\r")[-1]
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    print(err, end="")  # shown by pytest -rA: the line each case prints
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def stopped_run(overrides: list[str], step: int = 3) -> Path:
    """A run stopped after ``step`` steps (last.pt, best.pt, config.yaml written)."""
    assert main(compose_config([*overrides, f"trainer.stop_at_step={step}"])) == 0
    return Path(compose_config(overrides).paths.run_dir)


def flip_inside_a_tensor(path: Path, key: str = "model") -> None:
    """Change one byte inside the stored bytes of the checkpoint's largest ``key`` tensor."""
    saved = torch.load(path, weights_only=True)
    big = max(saved[key].values(), key=lambda t: t.numel())
    raw = bytearray(path.read_bytes())
    at = raw.find(big.numpy().tobytes())
    assert at > 0
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_last_pt_fall_back_to_last_prev_pt(capsys, smoke_overrides, tmp_path):
    straight = [
        *smoke_overrides[:2],
        f"paths.run_dir={tmp_path / 'straight'}",
        *smoke_overrides[3:],
    ]
    assert main(compose_config([*straight, "trainer.ckpt_every=1"])) == 0
    run_dir = stopped_run([*smoke_overrides, "trainer.ckpt_every=1"], step=4)
    assert checkpoint.load(run_dir / "last.prev.pt")["progress"]["step"] == 3
    flip_inside_a_tensor(run_dir / "last.pt")
    capsys.readouterr()
    assert main(compose_config([*smoke_overrides, "trainer.ckpt_every=1"])) == 0
    (notice,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("notice")]
    print(notice)
    assert notice == (
        f"notice: {run_dir / 'last.pt'} is damaged "
        "(its content does not match the digest stored in it); "
        f"resuming from {run_dir / 'last.prev.pt'} (step 3) instead"
    )
    a = checkpoint.load(tmp_path / "straight" / "last.pt")["model"]
    b = checkpoint.load(run_dir / "last.pt")["model"]
    assert_same(a, b)  # the damaged weight was not carried forward


def damage(path: Path, how: str) -> None:
    if how == "flipped":
        flip_inside_a_tensor(path)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "crafted":  # a pickle that would run code when loaded without weights_only

        class Payload:
            def __reduce__(self):
                return (print, ("this ran",))

        torch.save({"model": Payload()}, path)


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "crafted"])
def test_damaged_last_pt_without_a_fallback_is_one_line(how, capsys, smoke_overrides):
    run_dir = stopped_run(smoke_overrides)
    (run_dir / "last.prev.pt").unlink(missing_ok=True)
    damage(run_dir / "last.pt", how)
    before = snapshot(run_dir)
    err = failing(capsys, smoke_overrides)
    assert f"{run_dir / 'last.pt'} " in err and "last.prev.pt to fall back on" in err
    assert snapshot(run_dir) == before and "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty"])
def test_damaged_best_pt_stops_before_training(how, capsys, smoke_overrides):
    run_dir = stopped_run(smoke_overrides)
    damage(run_dir / "best.pt", how)
    before = snapshot(run_dir)
    capsys.readouterr()
    status = main(compose_config(smoke_overrides))
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err and "training" not in out
    print(err, end="")
    assert err.startswith(f"error: {run_dir / 'best.pt'} ") and "delete best.pt" in err
    assert snapshot(run_dir) == before  # config.yaml included: nothing rewritten


@pytest.mark.parametrize("content", [b"", b'{"status": "compl', b"\xff\xfe\x00", b"[1, 2]"])
def test_damaged_results_json_is_one_line(content, capsys, smoke_overrides):
    assert main(compose_config(smoke_overrides)) == 0
    run_dir = Path(compose_config(smoke_overrides).paths.run_dir)
    (run_dir / "results.json").write_bytes(content)
    before = snapshot(run_dir)
    err = failing(capsys, smoke_overrides)
    assert f"{run_dir / 'results.json'} is damaged" in err and snapshot(run_dir) == before


def test_results_without_last_pt_stop_before_anything_is_written(capsys, smoke_overrides):
    assert main(compose_config(smoke_overrides)) == 0
    run_dir = Path(compose_config(smoke_overrides).paths.run_dir)
    for name in ("last.pt", "last.prev.pt"):
        (run_dir / name).unlink()
    before = snapshot(run_dir)
    err = failing(capsys, smoke_overrides)
    assert "holds results.json but no last.pt" in err and snapshot(run_dir) == before


def test_a_config_change_is_refused_before_config_yaml_is_rewritten(capsys, smoke_overrides):
    run_dir = stopped_run(smoke_overrides)
    before = snapshot(run_dir)
    err = failing(capsys, [*smoke_overrides, "trainer.lr=0.002"])
    assert "another configuration" in err and snapshot(run_dir) == before


# --- the leaderboard file ---------------------------------------------------------------------

OLD_23 = [
    c
    for c in __import__("lra_bench.results", fromlist=["COLUMNS"]).COLUMNS
    if c not in ("compiled", "parity", "protocol", "run_id")
]


def old_row(columns: list[str]) -> str:
    values = {"schema": "1", "source": "run", "task": "listops", "attn": "softmax", "seed": "0"}
    values |= {"val_acc": "0.5", "test_acc": "0.25", "device": "cpu-1t", "max_len": "2000"}
    values |= {"commit": "adca049", "precision": "fp32"}
    return ",".join(values.get(c, "1") for c in columns) + "\n"


@pytest.mark.parametrize(
    "missing", [("compiled", "parity", "protocol", "run_id"), ("compiled",), ("run_id",)]
)
def test_older_headers_are_upgraded_in_column_order(missing, capsys, smoke_overrides, tmp_path):
    from lra_bench.report.load import load_csv
    from lra_bench.results import COLUMNS

    board = tmp_path / "leaderboard.csv"
    columns = [c for c in COLUMNS if c not in missing]
    board.write_text(",".join(columns) + "\n" + old_row(columns))
    assert main(compose_config(smoke_overrides)) == 0
    lines = board.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3
    records = load_csv(board)  # what `show` reads
    assert [r.get("max_len") for r in records] == [2000, 2048]
    old = records[0]
    assert old.commit == "adca049" and old.run_id == ("" if "run_id" in missing else "1")
    assert old.compiled == ("False" if "compiled" in missing else "1")


def test_a_last_line_lacking_only_its_newline_is_repaired(smoke_overrides, tmp_path):
    board = tmp_path / "leaderboard.csv"
    assert main(compose_config(smoke_overrides)) == 0
    board.write_text(board.read_text().rstrip("\n"))
    other = [*smoke_overrides[:2], f"paths.run_dir={tmp_path / 'other'}", *smoke_overrides[3:]]
    assert main(compose_config([*other, "seed=1"])) == 0
    rows = read_rows(board)
    assert [r["seed"] for r in rows] == ["0", "1"] and all(None not in r for r in rows)


def test_a_last_line_cut_inside_a_row_is_refused_before_training(capsys, smoke_overrides, tmp_path):
    board = tmp_path / "leaderboard.csv"
    assert main(compose_config(smoke_overrides)) == 0
    text = board.read_text()
    board.write_text(text[: len(text) - 20])  # a write cut off inside the row
    before = board.read_bytes()
    other = [*smoke_overrides[:2], f"paths.run_dir={tmp_path / 'other'}", *smoke_overrides[3:]]
    capsys.readouterr()
    status = main(compose_config([*other, "seed=1"]))
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and "training" not in out
    print(err, end="")
    assert f"{board}: line 2 is cut off (an interrupted write)" in err
    assert board.read_bytes() == before and not (tmp_path / "other" / "config.yaml").exists()


def test_another_schema_is_found_before_training(capsys, smoke_overrides, tmp_path):
    board = tmp_path / "leaderboard.csv"
    board.write_text("some,other,schema\n1,2,3\n")
    err = failing(capsys, smoke_overrides)
    assert "another schema" in err and board.read_text() == "some,other,schema\n1,2,3\n"
    assert not (tmp_path / "run" / "config.yaml").exists()


# --- machine failures, signals, leftovers -----------------------------------------------------


def test_out_of_memory_names_the_phase_and_leaves_error_txt(capsys, smoke_overrides, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ...")

    with monkeypatch.context() as patch:
        patch.setattr(train, "train_step", no_memory)
        err = failing(capsys, smoke_overrides)
    assert err == (
        "error: out of memory on cpu while training (step 1) (it tried to allocate 2.00 GiB); "
        "lower trainer.batch_size (raising trainer.grad_accum keeps the batch), "
        "trainer.eval_batch_size or the model's size\n"
    )
    run_dir = Path(compose_config(smoke_overrides).paths.run_dir)
    assert (run_dir / "error.txt").read_text() == err
    assert main(compose_config(smoke_overrides)) == 0  # a later success removes it
    assert not (run_dir / "error.txt").exists()


def test_a_full_disk_names_the_file_and_keeps_the_old_checkpoint(
    capsys, smoke_overrides, monkeypatch
):
    import errno

    run_dir = stopped_run([*smoke_overrides, "trainer.ckpt_every=1"], step=3)
    before = (run_dir / "last.pt").read_bytes()

    def disk_full(path, data):
        Path(path).write_bytes(bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "write_synced", disk_full)
        err = failing(capsys, [*smoke_overrides, "trainer.ckpt_every=1"])
    assert err.startswith(f"error: no space left on device writing {run_dir / 'last.pt'};")
    assert (run_dir / "last.pt").read_bytes() == before
    assert not list(run_dir.glob(".*.tmp-*"))


def test_leftover_temporaries_are_removed_at_the_next_start(capsys, smoke_overrides):
    run_dir = stopped_run(smoke_overrides)
    for name in (".last.pt.tmp-123-abcd1234", ".results.json.tmp-9-00000000"):
        (run_dir / name).write_bytes(b"")
    capsys.readouterr()
    assert main(compose_config(smoke_overrides)) == 0
    notices = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("notice")]
    assert notices == [
        f"notice: removed 2 temporary file(s) left by an interrupted write in {run_dir}: "
        ".last.pt.tmp-123-abcd1234, .results.json.tmp-9-00000000"
    ]
    assert not list(run_dir.glob(".*.tmp-*"))


@pytest.mark.parametrize("signum, status", [(15, 143), (2, 130), (None, 0)])
def test_a_stopped_run_exits_with_128_plus_the_signal(signum, status, monkeypatch):
    stopped = {"status": "interrupted", "step": 2, "signal": signum, "run_dir": "x"}
    monkeypatch.setattr(train, "run", lambda cfg: stopped)
    assert main(compose_config([])) == status


@pytest.mark.slow  # two commands in new processes; the fallback is tested in-process above
def test_command_keeps_hydra_files_in_run_dir_and_recovers_a_damaged_complete_last_pt(
    tmp_path, cache_dir
):
    """The real command: .hydra/ and the log follow paths.run_dir; a damaged complete last.pt
    falls back to last.prev.pt, and the run is finished again without a second row."""
    import os
    import subprocess
    import sys

    run_dir, board = tmp_path / "chosen", tmp_path / "lb.csv"
    cmd = [
        sys.executable, "-m", "lra_bench", "trainer=smoke", "data.gen_workers=1",
        f"paths.cache_dir={cache_dir}", f"paths.run_dir={run_dir}", f"paths.leaderboard={board}",
    ]  # fmt: skip
    import lra_bench

    source = str(Path(lra_bench.__file__).resolve().parents[1])  # the code under test
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": source}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "lra_bench.log").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen", "lb.csv", "lb.csv.lock"]
    damage(run_dir / "last.pt", "truncated")
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from {run_dir / 'last.prev.pt'} (step 6) instead" in again.stderr
    assert len(read_rows(board)) == 1 and checkpoint.load(run_dir / "last.pt")["complete"]
