"""Config composition (every task x attention pair) and one-line validation errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lra_bench.attention import REGISTRY, available
from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, config_hash, validate
from lra_bench.paths import conf_dir

TASKS = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
ATTNS = available()

PROTOCOL = {  # docs/protocol.md: max length, classes, batch, lr, warmup, eval every
    "listops": (2048, 10, 32, 1e-4, 1000, 500),
    "text": (4096, 2, 32, 1e-4, 80, 500),
    "retrieval": (4096, 2, 16, 2e-4, 800, 1000),
    "image": (1024, 10, 256, 1e-4, 175, 500),
    "pathfinder": (1024, 2, 128, 2e-4, 312, 500),
    "pathx": (16384, 2, 128, 2e-4, 312, 500),
}


@pytest.mark.parametrize("attn", ATTNS)
def test_each_attention_composes_to_exactly_its_dataclass_defaults(attn):
    node = compose_config([f"attn={attn}"]).attn
    assert OmegaConf.get_type(node) is REGISTRY[attn].config
    assert OmegaConf.to_object(node) == REGISTRY[attn].config()
    assert node.name == attn


def test_attention_options_come_from_the_registry_alone():
    assert not (
        conf_dir() / "attn"
    ).exists()  # a variant is one module: no YAML restating its defaults
    assert {f.name for f in dataclasses.fields(REGISTRY["skyformer"].config)} == set(
        compose_config(["attn=skyformer"]).attn
    )


def task_attention_pairs() -> list:
    """Every (task, attention) pair; the quick loop keeps each attention once, with the tasks taken
    in turn (so every task appears too), and leaves the rest of the product to the full run."""
    return [
        pytest.param(task, attn, marks=() if task == TASKS[j % len(TASKS)] else pytest.mark.slow)
        for j, attn in enumerate(ATTNS)
        for task in TASKS
    ]


@pytest.mark.parametrize("task, attn", task_attention_pairs())
def test_every_task_attention_pair_composes_and_validates(task, attn):
    cfg = compose_config([f"task={task}", f"attn={attn}"])
    validate(cfg)
    assert cfg.task.name == task and cfg.attn.name == attn


@pytest.mark.parametrize("task", sorted(PROTOCOL))
def test_task_protocol_matches_the_paper(task):
    cfg = compose_config([f"task={task}"])
    t = cfg.trainer
    assert (
        cfg.task.max_len,
        cfg.task.num_classes,
        t.batch_size,
        t.lr,
        t.warmup_steps,
        t.eval_every,
    ) == PROTOCOL[task]
    assert t.steps == 50_000
    assert (cfg.model.dim, cfg.model.ffn_dim, cfg.model.num_layers, cfg.model.num_heads) == (
        64,
        128,
        2,
        2,
    )


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
        (["trainer.lr=nan"], "trainer.lr"),
        (["trainer.lr=inf"], "trainer.lr"),
        (["trainer.weight_decay=nan"], "trainer.weight_decay"),
        (["trainer.weight_decay=-0.1"], "trainer.weight_decay"),
        (["trainer.eps=-1"], "trainer.eps"),
        (["trainer.eps=0"], "trainer.eps"),
        (["trainer.betas=[2,3]"], "trainer.betas"),
        (["trainer.betas=[-0.1,0.9]"], "trainer.betas"),
        (["trainer.betas=[0.9,1.0]"], "trainer.betas"),
        (["trainer.betas=[0.9]"], "trainer.betas"),
        (["trainer.betas=[0.9,0.99,0.999]"], "trainer.betas"),
        (["trainer.clip_value=nan"], "trainer.clip_value"),
        (["trainer.clip_value=inf"], "trainer.clip_value"),
        (["trainer.device=tpu"], "trainer.device"),
        (["trainer.device=cuda:x"], "trainer.device"),
        (["trainer.device=CPU"], "trainer.device"),
        (["model.norm_eps=nan"], "model.norm_eps"),
    ],
)
def test_out_of_range_values_fail_with_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    message = str(err.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["seed=abc"], "seed"),
        (["trainer.lr=fast"], "trainer.lr"),
        (["trainer.no_such_key=1"], "trainer.no_such_key"),
        (["attn=no_such_attention"], "attn"),
        (["attn=skyformer", "attn.num_landmarks=abc"], "attn.num_landmarks"),
        (["attn=performer", "attn.orthogonal=maybe"], "attn.orthogonal"),
        (["attn=skyformer", "attn.bogus=1"], "attn.bogus"),
        (["attn=softmax", "attn.num_landmarks=64"], "attn.num_landmarks"),
    ],
)
def test_wrong_types_and_unknown_names_fail_at_composition(overrides, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(overrides)
    assert key in f"{err.value} {err.value.__cause__}"


def test_unknown_attention_message_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["attn=no_such_attention"])
    assert "skyformer" in str(err.value) and "softmax" in str(err.value)


def test_unknown_attention_setting_names_the_key():
    with pytest.raises(
        ConfigError, match="attn.bogus"
    ):  # added with +: composes, then validation refuses it
        validate(compose_config(["attn=skyformer", "+attn.bogus=3"]))


def test_attention_name_must_match_the_chosen_variant():
    with pytest.raises(ConfigError, match="attn.name"):
        validate(compose_config(["attn=skyformer", "attn.name=softmax"]))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["task=listops", "data.source=hub"], "data.source"),
        (["task=text", "data.source=release"], "data.source"),
        (["task=retrieval", "data.source=hub"], "data.source"),
        (["task=image", "data.source=generate"], "data.source"),
        (["task=pathfinder", "data.source=local"], "data.source"),
        (["task=pathx", "task.max_len=1024"], "task.max_len"),
        (["task=pathfinder", "data.train_size=8"], "data.val_size"),
        (["task=listops", "data.size=2"], "data.size"),
        (
            ["task=listops", "data.max_length=300"],
            "data.max_length",
        ),  # the default min_length is 500
        (["task=text", "data.dev_split=sometimes"], "data.dev_split"),
        (["task=text", "data.heldout_fraction=1.0"], "data.heldout_fraction"),
        (["task=pathfinder", "data.difficulty=extreme"], "data.difficulty"),
        (["data.max_bytes=0"], "data.max_bytes"),
    ],
)
def test_task_data_rules_live_in_validation(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_offered_source_validates(task):
    from lra_bench.data.tasks import TASK_SOURCES

    for source in TASK_SOURCES[task]:
        cfg = compose_config([f"task={task}", f"data.source={source}"])
        validate(cfg)  # raises ConfigError on a rule broken
        assert (cfg.task.name, cfg.data.source) == (task, source)


def test_batch_must_divide_by_ranks_times_accumulation():
    cfg = compose_config(["trainer.batch_size=32", "trainer.grad_accum=2"])
    validate(cfg, world_size=4)
    with pytest.raises(
        ConfigError,
        match=r"trainer.batch_size=32: must be divisible by ranks x trainer.grad_accum \(3 x 2\)",
    ):
        validate(cfg, world_size=3)


def test_config_hash_ignores_paths_and_progress_but_not_protocol():
    base = compose_config([])
    assert config_hash(base) == config_hash(
        compose_config(["trainer.progress=false", "paths.runs_dir=elsewhere"])
    )
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


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``python -m lra_bench <argv>`` in this process
    from an empty folder: (exit status, stderr, stdout)."""
    from hydra.core.global_hydra import GlobalHydra

    from lra_bench.__main__ import main
    from lra_bench.precheck import run_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "HYDRA_FULL_ERROR", "0"
    )  # run_app sets it; monkeypatch restores it afterwards

    def call(argv: list[str]) -> tuple[int, str]:
        monkeypatch.setattr("sys.argv", ["lra_bench", *argv])
        try:
            with pytest.raises(SystemExit) as done:
                run_app(main)
        finally:
            GlobalHydra.instance().clear()
        captured = capsys.readouterr()
        return int(done.value.code or 0), captured.err, captured.out

    return call


@pytest.mark.parametrize(
    "argv, key",
    [
        (["seed=abc"], "seed"),
        (["trainer.lr=-1"], "trainer.lr"),
        (["attn=skyformer", "attn.num_landmarks=0"], "attn.num_landmarks"),
        (["attn=skyformer", "attn.num_landmarks=abc"], "attn.num_landmarks"),
        (["attn=skyformer", "+attn.bogus=3"], "attn.bogus"),
        (["trainer.bogus=1"], "trainer.bogus"),
        (["attn=no_such_attention"], "skyformer"),  # the message lists the choices
        (["task=text", "data.source=generate"], "data.source"),
    ],
)
def test_cli_problem_is_one_line_naming_the_key_and_no_folder(cli, tmp_path, argv, key):
    status, err, _ = cli(argv)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and key in err
    assert list(tmp_path.iterdir()) == []


def test_cli_checks_the_batch_against_torchrun_ranks(cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    status, err, _ = cli(["trainer.batch_size=32"])
    assert status == 2 and "trainer.batch_size" in err and "3 x 1" in err


@pytest.mark.slow
def test_help_lists_every_attention_as_a_choice(cli):
    status, _, out = cli(["--help"])
    assert (
        status == 0 and f"attn: {', '.join(sorted([*available(), 'custom']))}" in out
    )  # custom: attn.target=module:Class


@pytest.mark.slow  # the process-level twin of the in-process seed=abc case above
def test_cli_bad_value_prints_one_line_and_creates_nothing(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lra_bench", "seed=abc"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "seed" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_experiment_presets_adjust_only_their_attention():
    sky = compose_config(["attn=skyformer", "experiment=cpu_demo"])
    assert sky.attn.num_landmarks == 32 and sky.task.max_len == 256
    assert (
        compose_config(
            ["attn=skyformer", "experiment=cpu_demo", "attn.num_landmarks=64"]
        ).attn.num_landmarks
        == 64
    )
    assert compose_config(["attn=skyformer"]).attn.num_landmarks == 128
    validate(compose_config(["attn=softmax", "experiment=cpu_demo"]))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0"])
def test_known_device_kinds_pass(device):
    validate(compose_config([f"trainer.device={device}", "trainer.betas=[0.0,0.5]"]))


def test_every_task_config_has_its_data_registered():
    """A task in conf/task/ has a data module, a list of sources and, if an image task, a side."""
    from lra_bench.data.tasks import IMAGE_SIDES, TASK_MODULES, TASK_SOURCES

    conf_tasks = {
        p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "task").glob("*.yaml")
    }
    assert conf_tasks == set(TASK_MODULES) == set(TASK_SOURCES)
    assert set(IMAGE_SIDES) <= conf_tasks
    for task, side in IMAGE_SIDES.items():
        assert compose_config([f"task={task}"]).task.max_len == side * side


def test_data_modules_do_not_import_the_config_module_at_run_time():
    """Task knowledge lives in data/tasks.py, which config.py
    reads; the data side needs config only for types."""
    import ast

    data = Path(__file__).resolve().parents[1] / "src" / "lra_bench" / "data"
    for name in ("tasks.py", "listops.py", "__init__.py"):
        tree = ast.parse((data / name).read_text())
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert all(n.module != "lra_bench.config" for n in top), name


DEFAULT_FILES = {"model/default.yaml": "ModelConfig", "trainer/default.yaml": "TrainerConfig"}


@pytest.mark.parametrize("path", sorted(DEFAULT_FILES))
def test_default_config_files_restate_no_dataclass_default(path):
    """Defaults are written once, in the dataclasses; the default YAML keeps only what differs."""
    import lra_bench.config as config

    schema = getattr(config, DEFAULT_FILES[path])
    defaults = {f.name: f.default for f in dataclasses.fields(schema)}
    written = OmegaConf.to_container(OmegaConf.load(conf_dir() / path))
    restated = sorted(k for k, v in written.items() if k in defaults and defaults[k] == v)
    assert restated == [], f"{path} restates dataclass defaults: {restated}"


def protocol_keys(section: str, protocol: str, task: str) -> set[str]:
    """The ``section`` keys a protocol and its per-task file set."""
    files = [conf_dir() / "protocol" / f"{protocol}.yaml"]
    files.append(conf_dir() / "protocol_task" / protocol / f"{task}.yaml")
    return {key for f in files for key in OmegaConf.load(f).get(section, {})}


@pytest.mark.parametrize("protocol", ["skyformer_paper", "lra_paper"])
@pytest.mark.parametrize("task", TASKS)
def test_composed_model_and_loop_settings_are_the_dataclass_defaults(task, protocol):
    from lra_bench.config import ModelConfig, TrainerConfig

    cfg = compose_config([f"task={task}", f"protocol={protocol}"])
    for section, schema in (("model", ModelConfig), ("trainer", TrainerConfig)):
        chosen = protocol_keys(section, protocol, task)
        for f in dataclasses.fields(schema):
            if f.name not in chosen and f.default is not dataclasses.MISSING:
                assert cfg[section][f.name] == f.default, f"{section}.{f.name}"


def test_the_default_model_is_the_skyformer_papers():
    model = compose_config(["protocol=skyformer_paper"]).model
    sizes = (model.dim, model.ffn_dim, model.num_layers, model.num_heads, model.classifier_dim)
    assert sizes == (64, 128, 2, 2, 128)
    assert (model.dropout, model.pooling, model.attn_fp32) == (0.1, "mean", True)


def test_model_settings_missing_from_an_old_config_read_the_dataclass_defaults():
    from lra_bench.config import ModelConfig
    from lra_bench.model import option

    old = OmegaConf.create({"dim": 64})  # saved before norm_eps, init and positions existed
    assert option(old, "norm_eps") == ModelConfig.norm_eps
    assert (option(old, "init"), option(old, "positions")) == ("default", "learned")
    assert option(OmegaConf.create({"norm_eps": 1e-6}), "norm_eps") == 1e-6


def test_attention_settings_precedence(tmp_path):
    """dataclass < experiment's attn keys < attn_preset < parity_attn < command line, key by key."""
    files = {
        "experiment/prec.yaml": (
            "# @package _global_\nattn:\n  num_landmarks: 16\n  gamma: 0.5\n  seed: 7\n"
        ),
        "parity/prec.yaml": "# @package _global_\nparity: prec\n",
        "attn_preset/prec/skyformer.yaml": "num_landmarks: 24\ngamma: 0.25\n",
        "parity_attn/prec/skyformer.yaml": "num_landmarks: 40\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    base = ["attn=skyformer", f"hydra.searchpath=[file://{tmp_path}]"]

    def values(*overrides: str) -> tuple:
        attn = compose_config([*base, *overrides]).attn
        return attn.num_landmarks, attn.gamma, attn.seed

    from lra_bench.attention.skyformer import SkyformerConfig

    dataclass_values = (SkyformerConfig.num_landmarks, SkyformerConfig.gamma, SkyformerConfig.seed)
    assert values() == dataclass_values
    assert values("experiment=prec") == (24, 0.25, 7)  # the preset over the experiment's keys
    assert values("experiment=prec", "parity=prec") == (40, 0.25, 7)
    assert values("experiment=prec", "parity=prec", "attn.num_landmarks=48") == (48, 0.25, 7)
    assert values("parity=prec") == (40, *dataclass_values[1:])
