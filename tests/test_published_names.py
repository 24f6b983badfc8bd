"""Published tables by short name, from any folder, and shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from lra_bench.leaderboard import main
from lra_bench.paths import published_dir, published_names
from lra_bench.report.load import resolve_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_published_rows_where_the_package_looks():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    source = next(src for src, dest in shipped.items() if dest == "lra_bench/published")
    assert sorted(p.stem for p in (ROOT / source).glob("*.csv")) == published_names()
    assert published_dir() == ROOT / source  # the checkout's copy when not installed


@pytest.mark.parametrize(
    "name", ["skyformer_paper", "skyformer_paper.csv", "results/published/skyformer_paper.csv"]
)
def test_short_names_and_the_old_relative_path_resolve_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_table(name) == published_dir() / "skyformer_paper.csv"


def test_a_file_of_the_same_name_here_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "skyformer_paper").write_text("mine")
    assert resolve_table("skyformer_paper") == Path("skyformer_paper")


def test_an_unknown_name_lists_the_short_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "skyformer_papr"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "lra_paper, skyformer_paper" in err


def test_compare_by_name_from_outside_the_checkout(run_command):
    status, err, out = run_command(
        "lra_bench.leaderboard", ["compare", "lra_paper", "skyformer_paper"]
    )
    assert status == 0, err
    assert "skyformer_paper against lra_paper" in out and "Δ (pts)" in out
