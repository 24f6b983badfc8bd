"""A newcomer's first commands, as the README gives them, run from a folder outside the checkout."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lra_bench

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_command(start: str, python: str = sys.executable) -> list[str]:
    """The README's command beginning with ``start`` (in a code span or block), as argv."""
    match = re.search(re.escape(start) + r"[^`\n]*", README)
    assert match, f"the README no longer shows {start!r}"
    argv = shlex.split(match.group(0).replace("RUN_DIR…", "RUN_DIR"))
    assert argv[:2] == ["python", "-m"]
    return [python, *argv[1:]]


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


def newcomer_session(python: str, env: dict[str, str], home: Path) -> None:
    """The README's first commands with ``python``, in ``home``: a smoke run (twice: the second
    finds it complete), the leaderboard, a comparison with the paper by name, the curves, a typo."""

    def sh(argv: list[str], code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    smoke = readme_command("python -m lra_bench task=listops attn=skyformer trainer=smoke", python)
    first = sh([*smoke, "data.gen_workers=1"])
    run_dir = home / "runs" / "listops" / "skyformer" / "seed0" / "trainer=smoke"
    assert f"training listops/skyformer seed 0 on cpu-1t in {run_dir}" in first.stdout
    assert "device=cpu-1t" in first.stdout.splitlines()[-1]
    assert "step 3: val_acc=" in (run_dir / "lra_bench.log").read_text()
    again = sh([*smoke, "trainer.threads=1", "trainer.progress=true"])  # the same run
    assert f"run already complete in {run_dir}" in again.stdout

    show = readme_command("python -m lra_bench.leaderboard show results/leaderboard.csv", python)
    assert "add --smoke" in sh(show, code=2).stderr  # smoke rows are hidden by default
    assert "Test accuracy" in sh([*show, "--smoke"]).stdout
    compare = readme_command("python -m lra_bench.leaderboard compare skyformer_paper", python)
    assert "–†" in sh([*compare, "--smoke"]).stdout  # a CPU smoke run against the paper's V100
    curves = readme_command("python -m lra_bench.leaderboard curves RUN_DIR", python)
    sh([a if a != "RUN_DIR" else str(run_dir) for a in curves])
    assert (home / "curves.png").read_bytes()[:4] == b"\x89PNG"
    typo = readme_command("python -m lra_bench task=listops attn=skyformer attn.num_l", python)
    assert sh(typo, code=2).stderr == (
        "error: unknown setting `attn.num_landmark`; did you mean `attn.num_landmarks`?\n"
    )
    assert sorted(p.name for p in home.iterdir()) == ["curves.png", "results", "runs"]


@pytest.mark.slow
def test_readme_commands_from_outside_the_checkout(tmp_path, cache_dir):
    src = str(Path(lra_bench.__file__).resolve().parents[1])
    env = {**os.environ, "LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
    newcomer_session(sys.executable, env, tmp_path)


def built_wheel(out: Path) -> Path:
    """This checkout built as a wheel (offline, with the environment's build backend), from a
    copy of what the build reads, so nothing is written into the checkout."""
    project = out / "project"
    for name in ("src", "conf", "results/published"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps"]
    subprocess.run(
        [*pip, "--no-build-isolation", "-w", str(out / "dist"), str(project)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    [wheel] = (out / "dist").glob("lra_bench-*.whl")
    return wheel


def with_dependencies_of_this_environment(python: str) -> None:
    """Put this environment's site-packages on the new venv's path (a plain ``.pth`` entry: its
    own ``.pth`` files, the editable install of this checkout among them, are not read), so the
    venv needs no network and no packages of the machine outside this environment."""
    import site

    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(venv_site).mkdir(parents=True, exist_ok=True)
    Path(venv_site, "this_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")


@pytest.mark.slow
def test_readme_commands_in_a_fresh_venv_from_the_wheel(tmp_path, cache_dir):
    """Installed from the wheel (package data and all) in a new venv that takes its dependencies
    from this environment, run from an empty folder with nothing of the checkout on the path."""
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling (dev)")
    wheel = built_wheel(tmp_path / "build")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = str(venv / "bin" / "python")
    with_dependencies_of_this_environment(python)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"LRA_BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    install = [python, "-m", "pip", "install", "--quiet", "--no-index", str(wheel)]
    subprocess.run(install, check=True, env=env, capture_output=True, timeout=300)
    home = tmp_path / "home"
    home.mkdir()
    where = subprocess.run(
        [python, "-c", "import lra_bench; print(lra_bench.__file__)"],
        cwd=home, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not the checkout, not an editable
    newcomer_session(python, env, home)


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


@pytest.mark.slow
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
