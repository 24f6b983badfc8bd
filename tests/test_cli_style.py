"""One command-line style: the --option commands
take key=value as an alias; --help lists options."""

from __future__ import annotations

import argparse

import pytest

from lra_bench.cli_style import hydra_style_alias
from lra_bench.leaderboard import main as leaderboard
from lra_bench.leaderboard import parser as leaderboard_parser


def test_key_value_words_become_options_and_other_words_stay():
    top = leaderboard_parser()
    argv = [
        "compare",
        "skyformer_paper",
        "runs/x/seed0/trainer=smoke",
        "fail_below=2",
        "format=csv",
    ]
    assert hydra_style_alias(top, argv) == [
        "compare", "skyformer_paper", "runs/x/seed0/trainer=smoke", "--fail-below=2",
        "--format=csv",
    ]  # fmt: skip


def test_both_styles_give_the_same_output(capsys):
    assert leaderboard(["show", "skyformer_paper", "--format", "csv", "--task", "listops"]) == 0
    dashed = capsys.readouterr().out
    assert leaderboard(["show", "skyformer_paper", "format=csv", "task=listops"]) == 0
    assert capsys.readouterr().out == dashed and dashed


@pytest.mark.parametrize("module", ["leaderboard", "approx", "fidelity"])
def test_help_lists_the_options(module, capsys):
    import importlib

    main = importlib.import_module(f"lra_bench.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--help" in out and "key=value" in out


def test_an_alias_for_a_subcommand_option():
    sub = argparse.ArgumentParser()
    sub.add_subparsers().add_parser("x").add_argument("--n-max", type=int)
    assert hydra_style_alias(sub, ["x", "n_max=3"]) == ["x", "--n-max=3"]
