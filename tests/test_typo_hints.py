"""A misspelt setting: the closest real names, in one line, from the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lra_bench
from lra_bench.typo_hints import unknown_setting

HYDRA = "Could not override '{}'. To append to your config use +{}=3 Key 'x' not in 'Y'"


@pytest.mark.parametrize(
    "overrides, key, hint",
    [
        (["attn=skyformer", "attn.num_landmark=3"], "attn.num_landmark", "attn.num_landmarks"),
        (["trainer.stpes=3"], "trainer.stpes", "trainer.steps"),
        (["attn=performer", "attn.num_feature=3"], "attn.num_feature", "attn.num_features"),
        (["sed=3"], "sed", "seed"),
    ],
)
def test_the_closest_setting_of_the_chosen_attention(overrides, key, hint):
    message = unknown_setting(HYDRA.format(key, key), overrides)
    assert message == f"unknown setting `{key}`; did you mean `{hint}`?"


def test_nothing_close_and_other_messages():
    message = unknown_setting(HYDRA.format("zzz.qqq", "zzz.qqq"), ["zzz.qqq=3"])
    assert message is not None and message.startswith("unknown setting `zzz.qqq`;")
    assert unknown_setting("Could not find 'attn/skyfomer'", ["attn=skyfomer"]) is None


def test_the_command_prints_one_line_and_makes_no_folder(tmp_path):
    src = str(Path(lra_bench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "lra_bench", "attn=skyformer", "attn.num_landmark=3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "error: unknown setting `attn.num_landmark`; did you mean `attn.num_landmarks`?\n"
    )
    assert not list(tmp_path.iterdir())
