"""Config composition (every task x attention pair) and one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lra_bench.attention import available
from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, config_hash, validate
from lra_bench.paths import conf_dir

TASKS = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
ATTNS = sorted(p.stem for p in (conf_dir() / "attn").glob("*.yaml"))

PROTOCOL = {  # DESIGN §3: max length, classes, batch, lr, warmup, eval every
    "listops": (2048, 10, 32, 1e-4, 1000, 500),
    "text": (4096, 2, 32, 1e-4, 80, 500),
    "retrieval": (4096, 2, 16, 2e-4, 800, 1000),
    "image": (1024, 10, 256, 1e-4, 175, 500),
    "pathfinder": (1024, 2, 128, 2e-4, 312, 500),
    "pathx": (16384, 2, 128, 2e-4, 312, 500),
}


def test_every_attention_yaml_is_registered():
    assert ATTNS == available()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("attn", ATTNS)
def test_every_task_attention_pair_composes_and_validates(task, attn):
    cfg = compose_config([f"task={task}", f"attn={attn}"])
    validate(cfg)
    assert cfg.task.name == task and cfg.attn.name == attn


@pytest.mark.parametrize("task", sorted(PROTOCOL))
def test_task_protocol_matches_the_paper(task):
    cfg = compose_config([f"task={task}"])
    t = cfg.trainer
    assert (cfg.task.max_len, cfg.task.num_classes, t.batch_size, t.lr, t.warmup_steps, t.eval_every) == PROTOCOL[task]
    assert t.steps == 50_000
    assert (cfg.model.dim, cfg.model.ffn_dim, cfg.model.num_layers, cfg.model.num_heads) == (64, 128, 2, 2)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer.lr=-1"], "trainer.lr"),
        (["trainer.batch_size=0"], "trainer.batch_size"),
        (["attn=skyformer", "attn.num_landmarks=0"], "attn.num_landmarks"),
        (["attn=skyformer", "attn.num_landmarks=4096"], "attn.num_landmarks"),
        (["trainer.grad_accum=3"], "trainer.batch_size"),
        (["model.dropout=1.5"], "model.dropout"),
        (["trainer.warmup_steps=1"], "trainer.warmup_steps"),
    ],
)
def test_out_of_range_values_fail_with_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    message = str(err.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize("overrides", [["seed=abc"], ["trainer.lr=fast"], ["trainer.no_such_key=1"], ["attn=no_such_attention"]])
def test_wrong_types_and_unknown_names_fail_at_composition(overrides):
    with pytest.raises(ConfigCompositionException):
        compose_config(overrides)


def test_unknown_attention_message_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["attn=no_such_attention"])
    assert "skyformer" in str(err.value) and "softmax" in str(err.value)


def test_unknown_attention_setting_names_the_key():
    with pytest.raises(ConfigError, match="attn.bogus"):
        validate(compose_config(["attn=skyformer", "+attn.bogus=3"]))


def test_config_hash_ignores_paths_and_progress_but_not_protocol():
    base = compose_config([])
    assert config_hash(base) == config_hash(compose_config(["trainer.progress=false", "paths.runs_dir=elsewhere"]))
    assert config_hash(base) != config_hash(compose_config(["trainer.lr=0.001"]))
    assert config_hash(base) != config_hash(compose_config(["seed=1"]))


def test_conf_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (conf_dir() / "config.yaml").is_file()
    cfg = compose_config(["task=listops", "attn=skyformer"])
    assert OmegaConf.select(cfg, "attn.num_landmarks") == 128


def test_wheel_carries_the_configs():
    pyproject = (Path(conf_dir()).parent / "pyproject.toml").read_text()
    assert '"conf" = "lra_bench/conf"' in pyproject


@pytest.mark.parametrize(
    "argv, key",
    [
        (["seed=abc"], "seed"),
        (["trainer.lr=-1"], "trainer.lr"),
        (["attn=skyformer", "attn.num_landmarks=0"], "attn.num_landmarks"),
        (["trainer.bogus=1"], "trainer.bogus"),
        (["attn=no_such_attention"], "skyformer"),  # the message lists the choices
    ],
)
def test_precheck_gives_one_line_naming_the_key(argv, key):
    from lra_bench.precheck import precheck_overrides

    problem = precheck_overrides(argv)
    assert problem is not None and key in problem and "\n" not in problem


def test_precheck_passes_valid_runs_and_leaves_sweeps_to_hydra():
    from lra_bench.precheck import precheck_overrides

    assert precheck_overrides(["task=listops", "attn=skyformer", "experiment=cpu_demo"]) is None
    assert precheck_overrides(["-m", "attn=softmax,skyformer"]) is None


def test_cli_bad_value_prints_one_line_and_creates_nothing(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lra_bench", "seed=abc"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "seed" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_experiment_presets_adjust_only_their_attention():
    sky = compose_config(["attn=skyformer", "experiment=cpu_demo"])
    assert sky.attn.num_landmarks == 32 and sky.task.max_len == 256
    assert compose_config(["attn=skyformer", "experiment=cpu_demo", "attn.num_landmarks=64"]).attn.num_landmarks == 64
    assert compose_config(["attn=skyformer"]).attn.num_landmarks == 128
    validate(compose_config(["attn=softmax", "experiment=cpu_demo"]))
