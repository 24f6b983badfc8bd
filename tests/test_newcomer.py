"""A newcomer's first commands, as the README gives them, run from a folder outside the checkout."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import lra_bench

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_command(start: str) -> list[str]:
    """The README's command beginning with ``start`` (in a code span or block), as argv."""
    match = re.search(re.escape(start) + r"[^`\n]*", README)
    assert match, f"the README no longer shows {start!r}"
    argv = shlex.split(match.group(0).replace("RUN_DIR…", "RUN_DIR"))
    assert argv[:2] == ["python", "-m"]
    return [sys.executable, *argv[1:]]


def test_ci_runs_the_readme_set_up_block_as_written():
    done = subprocess.run(
        [str(ROOT / ".ci" / "readme_setup"), str(ROOT / "README.md")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.splitlines() == ['pip install -e ".[dev]"', "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"\nmake test\n' in ci  # verbatim, after the README check
    assert "://" not in ci  # no index host written into CI
    makefile = (ROOT / "Makefile").read_text()
    assert "test:\n\t$(PYTHON) -m pytest -n auto\n" in makefile  # every test, slow ones too


@pytest.mark.slow
def test_readme_commands_from_outside_the_checkout(tmp_path, cache_dir):
    src = str(Path(lra_bench.__file__).resolve().parents[1])
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])

    def sh(argv: list[str], code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    smoke = readme_command("python -m lra_bench task=listops attn=skyformer trainer=smoke")
    first = sh([*smoke, "data.gen_workers=1"])
    run_dir = tmp_path / "runs" / "listops" / "skyformer" / "seed0" / "trainer=smoke"
    assert f"training listops/skyformer seed 0 on cpu-1t in {run_dir}" in first.stdout
    assert "device=cpu-1t" in first.stdout.splitlines()[-1]
    assert "step 3: val_acc=" in (run_dir / "lra_bench.log").read_text()
    again = sh([*smoke, "trainer.threads=1", "trainer.progress=true"])  # the same run
    assert f"run already complete in {run_dir}" in again.stdout

    show = readme_command("python -m lra_bench.leaderboard show results/leaderboard.csv")
    assert "add --smoke" in sh(show, code=2).stderr  # smoke rows are hidden by default
    assert "Test accuracy" in sh([*show, "--smoke"]).stdout
    compare = readme_command("python -m lra_bench.leaderboard compare skyformer_paper")
    assert "–†" in sh([*compare, "--smoke"]).stdout  # a CPU smoke run against the paper's V100
    curves = readme_command("python -m lra_bench.leaderboard curves RUN_DIR")
    sh([a if a != "RUN_DIR" else str(run_dir) for a in curves])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_is_acknowledged_at_once(capsys):
    import os
    import signal

    from lra_bench.train import StopFlag

    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # handled before the step ends
        assert "stopping after this step… (SIGINT" in capsys.readouterr().err
    with StopFlag(announce=False):
        os.kill(os.getpid(), signal.SIGTERM)
    assert capsys.readouterr().err == ""


def test_missing_data_leaves_no_run_folder_and_no_lock(tmp_path):
    src = str(Path(lra_bench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "empty").mkdir()
    cmd = [
        sys.executable, "-m", "lra_bench", "task=text", "trainer=smoke", "data.source=local",
        f"data.root={tmp_path / 'empty'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "cache").rglob("*.lock"))


def test_a_failed_build_leaves_no_lock_file(tmp_path):
    from lra_bench.data import DataError
    from lra_bench.io import build_lock

    lock = tmp_path / "entry.lock"
    with pytest.raises(DataError), build_lock(lock, tmp_path / "entry" / "key.json"):
        raise DataError("not found")
    assert not lock.exists()
