"""Bad input through the command's entry point: one
line on stderr, exit status 2, nothing half-written."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra_bench.compose import compose_config
from lra_bench.train import main


def failing(capsys, overrides: list[str]) -> str:
    status = main(compose_config(overrides))
    err = capsys.readouterr().err.split("\r")[-1]  # after any progress bar redraws
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_data_folder(capsys, smoke_overrides, tmp_path):
    err = failing(
        capsys, [*smoke_overrides, "data.source=release", f"data.root={tmp_path / 'nowhere'}"]
    )
    assert "nowhere" in err and "data.root" in err


def test_malformed_release_tsv_names_file_and_line(capsys, smoke_overrides, tmp_path):
    folder = tmp_path / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    good = "( ( [MAX 4 ) 5 ) ] )\t5\n"
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + good * 3)
    bad = folder / "basic_train.tsv"
    bad.write_text("Source\tTarget\n" + good + "( [MIN 3 ] )\tnot-a-label\n")
    before = bad.read_bytes()
    err = failing(
        capsys, [*smoke_overrides, "data.source=release", f"data.root={tmp_path / 'lra_release'}"]
    )
    assert "basic_train.tsv" in err and "3" in err
    assert bad.read_bytes() == before  # the data file is never modified


def test_checkpoint_from_another_config(capsys, smoke_overrides, tmp_path):
    assert main(compose_config([*smoke_overrides, "trainer.stop_at_step=3"])) == 0
    capsys.readouterr()
    err = failing(capsys, [*smoke_overrides, "trainer.lr=0.5"])
    assert "another configuration" in err


def test_unwritable_results_location(capsys, smoke_overrides, tmp_path):
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    err = failing(capsys, [*smoke_overrides, f"paths.leaderboard={blocker / 'lb.csv'}"])
    assert "paths.leaderboard" in err


def test_leaderboard_with_another_schema_is_left_untouched(capsys, smoke_overrides, tmp_path):
    board = tmp_path / "leaderboard.csv"
    board.write_text("some,other,schema\n1,2,3\n")
    err = failing(capsys, smoke_overrides)
    assert "another schema" in err and board.read_text() == "some,other,schema\n1,2,3\n"


def test_nan_loss(capsys, smoke_overrides, tmp_path):
    err = failing(
        capsys,
        [*smoke_overrides, "trainer.lr=1e30", "trainer.clip_value=null", "trainer.warmup_steps=0"],
    )
    assert "loss became nan" in err and not (tmp_path / "leaderboard.csv").exists()


def test_batch_not_divisible_by_accumulation(capsys, smoke_overrides):
    err = failing(capsys, [*smoke_overrides, "trainer.grad_accum=3"])
    assert "trainer.batch_size" in err


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_rerun_matches_an_uninterrupted_run(tmp_path, cache_dir):
    env = {
        **os.environ,
        "LRA_BENCH_CACHE_DIR": str(cache_dir),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }

    def command(name: str) -> list[str]:
        return [
            sys.executable, "-m", "lra_bench", "trainer=smoke", "trainer.steps=200",
            "trainer.ckpt_every=2", "trainer.eval_every=10", f"paths.run_dir={tmp_path / name}",
            f"paths.leaderboard={tmp_path / name}.csv",
        ]  # fmt: skip

    reference = subprocess.run(
        command("straight"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    proc = subprocess.Popen(
        command("killed"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after = random.Random().randint(4, 30)  # a random step, long before the run's 200
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if last.exists() and torch.load(last, weights_only=True)["progress"]["step"] >= kill_after:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "killed.csv").exists()
    rerun = subprocess.run(
        command("killed"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"notice: taking over the stale lock in {tmp_path / 'killed'}" in rerun.stderr
    assert f"PID {proc.pid}," in rerun.stderr

    def row(name: str) -> dict[str, str]:
        with open(tmp_path / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1
        return rows[0]

    a, b = row("straight"), row("killed")
    assert (a["val_acc"], a["test_acc"], a["best_step"]) == (
        b["val_acc"],
        b["test_acc"],
        b["best_step"],
    )


# --- one run owns its run folder ----------------------------------------------------------------

HOLD_LOCK = (
    "import sys; from pathlib import Path; from lra_bench.runlock import RunLock; "
    "lock = RunLock.acquire(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read(); "
    "lock.release()"
)


def lock_holder(run_dir, tmp_path) -> subprocess.Popen:
    """A process that takes ``run_dir``'s lock and keeps it until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_run_folder_held_by_a_live_process(capsys, smoke_overrides, tmp_path):
    run_dir = tmp_path / "run"
    holder = lock_holder(run_dir, tmp_path)
    try:
        err = failing(capsys, smoke_overrides)
        assert [p.name for p in run_dir.iterdir()] == ["run.lock"]  # the refused run wrote nothing
        assert (
            f'"pid": {holder.pid}' in (run_dir / "run.lock").read_text()
        )  # and left the holder's lock alone
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert (
        str(run_dir) in err
        and f"PID {holder.pid}" in err
        and "paths.run_dir=" in err
        and "wait" in err
    )
    assert not (run_dir / "run.lock").exists()  # released by its holder
    assert not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.slow
def test_lock_of_a_killed_process_is_taken_over(capsys, smoke_overrides, tmp_path):
    run_dir = tmp_path / "run"
    holder = lock_holder(run_dir, tmp_path)
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    assert (run_dir / "run.lock").read_text()  # left behind
    assert main(compose_config(smoke_overrides)) == 0
    err = capsys.readouterr().err
    assert f"notice: taking over the stale lock in {run_dir}" in err and f"PID {holder.pid}" in err
    assert not (run_dir / "run.lock").exists()
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


@pytest.mark.slow
def test_two_identical_commands_at_once_train_once(tmp_path, cache_dir):
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "lra_bench", "trainer=smoke", "trainer.steps=40",
        f"paths.run_dir={tmp_path / 'run'}", f"paths.leaderboard={tmp_path / 'lb.csv'}",
        f"paths.cache_dir={cache_dir}",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    trained = [o for o in outs if "training listops/" in o[1]]
    assert len(trained) == 1 and trained[0][0] == 0, outs
    (code, out, err) = next(o for o in outs if o is not trained[0])
    assert "Traceback" not in err and "training" not in out
    assert (
        code == 2 and err.count("\n") == 1 and "is in use by another run" in err
    ) or "run already complete" in out, (code, out, err)
    with open(tmp_path / "lb.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


# --- caches that cannot lie -----------------------------------------------------------------------


def test_changed_cache_file_is_rebuilt_with_a_notice(capsys, smoke_overrides, tmp_path):
    import pyarrow as pa

    overrides = [*smoke_overrides, f"paths.cache_dir={tmp_path / 'cache'}"]
    assert (
        main(
            compose_config(
                [*overrides, "trainer.stop_at_step=1", f"paths.run_dir={tmp_path / 'first'}"]
            )
        )
        == 0
    )
    (arrow,) = (tmp_path / "cache").glob("listops-*/train/data-*.arrow")
    with pa.ipc.open_stream(arrow) as reader:
        table = reader.read_all()
    ids = table.column("input_ids").combine_chunks()
    bad = pa.ListArray.from_arrays(
        ids.offsets, pa.array([250] * len(ids.values), ids.values.type)
    )  # out of the vocabulary
    table = table.set_column(table.column_names.index("input_ids"), "input_ids", bad)
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)
    capsys.readouterr()
    assert main(compose_config(overrides)) == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if "notice" in line]
    assert notices == [
        f"notice: rebuilding the data cache {arrow.parents[1]}: train split does not match the "
        "digest recorded in key.json (column input_ids)"
    ]


# --- Pathfinder release with unreadable files -----------------------------------------------------


def small_pathfinder_release(tmp_path, n: int = 29, zero_byte: tuple[int, ...] = (3,)):
    from test_pathfinder_reader import write_release

    write_release(tmp_path / "release", n=n, empty=())
    imgs = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14" / "imgs" / "0"
    for i in zero_byte:
        (imgs / f"sample_{i}.png").write_bytes(b"")
    return ["task=pathfinder", "data.source=release", f"data.root={tmp_path / 'release'}"]


@pytest.mark.slow
def test_training_on_a_release_with_a_zero_byte_png_warns_and_trains(
    capsys, smoke_overrides, tmp_path
):
    release = small_pathfinder_release(tmp_path)
    overrides = [*smoke_overrides, f"paths.cache_dir={tmp_path / 'cache'}", *release]
    assert main(compose_config(overrides)) == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert (
        "skipped 1 of 29 images" in warning
        and "imgs/0/sample_3.png" in warning
        and "Traceback" not in err
    )
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_data_command_on_a_release_with_unreadable_pngs(tmp_path, run_command):
    release = small_pathfinder_release(tmp_path, zero_byte=(3, 5, 7, 9))

    def data_command(release: list[str]) -> tuple[int, str, str]:
        cache = f"paths.cache_dir={tmp_path / 'cache'}"
        return run_command("lra_bench.data", [*release, cache, "trainer.progress=false"])

    status, err, out = data_command(release)
    assert status == 0, err
    (warning,) = err.splitlines()
    assert warning.startswith("warning: skipped 4 of 29 images") and warning.endswith(
        "sample_7.png, ..."
    )
    assert "pathfinder train: 21 examples" in out  # 25 usable: 80/10/10 -> 21/2/2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "release",
    ]  # nothing written elsewhere
    few_release = small_pathfinder_release(tmp_path / "few", n=11, zero_byte=(0, 1))
    status, err, _ = data_command(few_release)
    assert status == 2 and err.count("\n") == 2  # the warning and the error
    assert err.splitlines()[1].startswith("error: ") and "holds 9 usable images, too few" in err


# --- an aclImdb tree with an empty class folder ---------------------------------------------------


@pytest.mark.parametrize("label", ["pos", "neg"])
def test_aclimdb_tree_with_an_empty_class_folder(capsys, smoke_overrides, tmp_path, label):
    from fixtures_data import write_aclimdb

    tree = write_aclimdb(tmp_path / "src")
    for f in (tree / "train" / label).iterdir():
        f.unlink()
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    err = failing(
        capsys,
        [
            *smoke_overrides,
            "task=text",
            "data.source=local",
            f"data.root={tree}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
    )
    assert f"empty folder {tree / 'train' / label}" in err and "one class only" in err
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before
    assert not (tmp_path / "leaderboard.csv").exists()


# --- run folder names and the app's name ----------------------------------------------------------


def test_run_folders_are_one_level_deep_and_named_by_what_changes_results(
    tmp_path, cache_dir, run_command
):
    argv = [
        "trainer=smoke",
        f"paths.cache_dir={cache_dir}",
        f"paths.leaderboard={tmp_path / 'lb.csv'}",
    ]
    status, err, _ = run_command("lra_bench", argv)
    assert status == 0, err[-2000:]
    (run_dir,) = (tmp_path / "runs" / "listops" / "softmax" / "seed0").iterdir()
    assert run_dir.name == "trainer=smoke"  # paths never name a run
    assert (run_dir / "results.json").is_file() and (run_dir / "lra_bench.log").is_file()
    assert not list(run_dir.glob("__main__*"))
    _, _, out = run_command("lra_bench", argv)
    assert f"run already complete in {run_dir};" in out  # the same folder


@pytest.mark.slow
@pytest.mark.parametrize("module", ["lra_bench", "lra_bench.bench"])
def test_help_names_the_app(tmp_path, run_command, module):
    status, _, out = run_command(module, ["--help"])
    assert status == 0 and out.splitlines()[0] == f"{module} is powered by Hydra."
    assert "__main__" not in out and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("module", ["lra_bench", "lra_bench.bench"])
def test_help_into_a_closed_pipe_exits_without_a_traceback(tmp_path, module):
    """``--help | head``: the reader is gone before the help is written."""
    _assert_quiet_exit_into_a_closed_pipe(tmp_path, [module, "--help"])


def _assert_quiet_exit_into_a_closed_pipe(tmp_path: Path, argv: list[str]) -> None:
    """``python -m <argv>`` whose reader is gone before it writes: exit 141 (a shell's status for
    a process stopped by SIGPIPE), no traceback, nothing written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err[-2000:]
    assert "Traceback" not in err and "BrokenPipe" not in err and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["lra_bench.leaderboard", "show", "skyformer_paper", "--format", "json"],
        ["lra_bench.table", "status", "experiment=cpu_table"],
    ],
)
def test_a_report_into_a_closed_pipe_says_it_did_not_finish(tmp_path, argv):
    """``... | head`` on the report commands: the status every command gives a closed output
    (not 0, which would read as a complete report)."""
    _assert_quiet_exit_into_a_closed_pipe(tmp_path, argv)


def test_checkpoint_temporary_names_are_unique_per_process_and_call(tmp_path, monkeypatch):
    from lra_bench import checkpoint

    seen = []
    real_write = checkpoint.write_synced
    monkeypatch.setattr(
        checkpoint,
        "write_synced",
        lambda path, data: (seen.append(Path(path).name), real_write(path, data)),
    )
    for _ in range(2):
        checkpoint.save_atomic({"step": 1}, tmp_path / "last.pt")
    assert len(set(seen)) == 2 and all(
        name.startswith(f".last.pt.tmp-{os.getpid()}-") for name in seen
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"] and checkpoint.load(
        tmp_path / "last.pt"
    ) == {"step": 1}
