"""Run folder names: only settings that change results, one level, safe on every file system."""

from __future__ import annotations

import hashlib
import re

import pytest

from lra_bench.compose import compose_config
from lra_bench.config import config_hash
from lra_bench.run_names import MAX_NAME, RESULT_NEUTRAL, run_folder_name

SAFE = re.compile(r"[A-Za-z0-9._,\[\]=-]+")
NEUTRAL_VALUES = {
    "trainer.progress": "false", "trainer.log_every": "7", "trainer.stop_at_step": "3",
    "trainer.ckpt_every": "7", "trainer.device": "cpu", "trainer.threads": "1",
    "data.loader_workers": "1", "data.gen_workers": "1", "data.root": "/data/lra",
    "data.source": "generate", "trainer.dist_timeout_s": "60",
}  # fmt: skip


def run_dir(*overrides: str) -> str:
    return compose_config(list(overrides), return_hydra_config=True).hydra.run.dir


@pytest.mark.slow
def test_threads_and_the_like_keep_the_folder_and_the_config_hash():
    assert set(NEUTRAL_VALUES) == set(RESULT_NEUTRAL)
    base = ["attn=skyformer", "trainer=smoke"]
    base_dir, base_hash = run_dir(*base), config_hash(compose_config(base))
    for key, value in NEUTRAL_VALUES.items():
        other = [*base, f"{key}={value}", "paths.leaderboard=x.csv", "logger.mode=offline"]
        assert run_dir(*other) == base_dir, key
        assert config_hash(compose_config(other)) == base_hash, key
    assert base_dir == "runs/listops/skyformer/seed0/trainer=smoke"


def test_a_setting_that_changes_results_changes_both():
    a, b = ["trainer=smoke"], ["trainer=smoke", "trainer.lr=0.1"]
    assert run_dir(*a) != run_dir(*b)
    assert config_hash(compose_config(a)) != config_hash(compose_config(b))


def test_a_run_without_overrides_is_not_the_parent_of_others():
    plain, smoke = run_dir(), run_dir("trainer=smoke")
    assert plain == "runs/listops/softmax/seed0/default"
    assert not smoke.startswith(plain + "/")


@pytest.mark.parametrize(
    "override",
    [
        "attn.target=my_module:ScaledAttention", "+attn.settings.scale=2",
        "hydra/launcher=slurm", "trainer.betas=[0.9, 0.98]", "data.root=/x/y",
        "~trainer.clip_value", f"trainer.lr={'1' * 300}",
    ],
)  # fmt: skip
def test_names_are_safe_one_level_and_short(override):
    name = run_folder_name(["trainer=smoke", override], ["task", "attn", "seed"])
    assert SAFE.fullmatch(name) and len(name) <= MAX_NAME, name


def test_unsafe_values_keep_a_readable_part_and_a_hash_of_the_whole():
    value = "my_module:ScaledAttention"
    name = run_folder_name([f"attn.target={value}", "+attn.settings.scale=2"])
    digest = hashlib.sha1(value.encode()).hexdigest()[:8]
    assert name == f"attn.settings.scale=2,attn.target=my_module_ScaledAttention-{digest}"
    assert run_folder_name(["attn.target=a:b"]) != run_folder_name(["attn.target=a_b"])
    assert run_folder_name(["+x=1", "seed=3"], ["seed"]) == "x=1"


def test_a_preset_of_a_variant_has_folders_of_its_own(tmp_path):
    (tmp_path / "attn").mkdir()
    (tmp_path / "attn" / "wide_skyformer.yaml").write_text(
        "defaults:\n  - skyformer\nnum_landmarks: 256\n"
    )
    overrides = [f"hydra.searchpath=[file://{tmp_path}]", "attn=wide_skyformer"]
    cfg = compose_config(overrides, return_hydra_config=True)
    assert cfg.attn.name == "skyformer" and cfg.attn.num_landmarks == 256
    assert cfg.hydra.run.dir == "runs/listops/wide_skyformer/seed0/default"
