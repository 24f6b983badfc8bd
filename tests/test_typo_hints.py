"""A misspelt setting: the closest real names, in one line, from the real command, without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lra_bench
from lra_bench.compose import compose_config
from lra_bench.config import Config
from lra_bench.typo_hints import (
    chosen_attention,
    schema_names,
    setting_names,
    unknown_override,
    unknown_setting,
)

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


@pytest.mark.parametrize(
    "overrides, hint",
    [
        (["attn=skyformer", "attn.num_landmark=3"], "attn.num_landmarks"),
        (["task=text", "trainer.stpes=3"], "trainer.steps"),
        (["-m", "attn=performer", "attn.num_feature=3,4"], "attn.num_features"),
        (["sed=3"], "seed"),
        (["data.sorce=auto"], "data.source"),
    ],
)
def test_a_misspelt_key_is_answered_from_the_schema(overrides, hint):
    key = overrides[-1].partition("=")[0]
    assert unknown_override(overrides) == f"unknown setting `{key}`; did you mean `{hint}`?"


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=text", "trainer=smoke", "experiment=cpu_demo", "hydra/launcher=basic"],
        ["attn=skyformer", "attn.num_landmarks=3", "seed=1", "trainer.betas.0=0.5"],
        ["+attn.settings.window=8", "attn=custom", "attn.settings.scale=2", "~logger"],
        ["attn=wide_skyformer", "attn.num_landmark=3"],  # a user's preset: left to Hydra
        ["attn=softmax,skyformer", "attn.num_landmark=3", "hydra.run.dir=x"],
        ["--config-name", "other", "whatever.key=1"],
        ["--cfg", "job", "paths.runs_dir=/tmp/x"],
    ],
)
def test_settings_groups_and_what_hydra_decides_are_let_through(overrides):
    assert unknown_override(overrides) is None


@pytest.mark.parametrize("attn", ["softmax", "skyformer", "custom"])
def test_the_schema_names_exactly_the_composed_settings(attn):
    """The names the early check accepts are the composed config's, no more, no fewer."""
    composed = [n for n in setting_names(compose_config([f"attn={attn}"])) if n[:5] != "hydra"]
    names, _ = schema_names(Config)
    attention = chosen_attention([f"attn={attn}"])
    assert attention is not None
    assert sorted(names + schema_names(attention, "attn.")[0]) == sorted(composed)


def test_the_typo_command_imports_no_torch(tmp_path):
    """The real entry point: one line, status 2, and neither torch nor numpy imported."""
    src = str(Path(lra_bench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lra_bench", "task=listops", "attn=skyformer",
         "attn.num_landmark=3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    imported = {ln.rpartition("|")[2].strip() for ln in done.stderr.splitlines() if "|" in ln}
    assert done.returncode == 2 and "lra_bench.precheck" in imported
    assert not {"torch", "numpy", "datasets", "matplotlib"} & imported
    assert done.stderr.splitlines()[-1] == (
        "error: unknown setting `attn.num_landmark`; did you mean `attn.num_landmarks`?"
    )
