"""Every row of the LRA paper's Table 1 under ``protocol=lra_paper``: each task x attention gets
the model its ``<model>_base.py`` in google-research/long-range-arena sets, at that repository's
HEAD (cd31e5c). The table below restates those files; docs/protocol.md cites file and commit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from lra_bench.compose import compose_config
from lra_bench.config import register_configs, validate
from lra_bench.paths import conf_dir

# LRA model name -> attention here
ATTENTIONS = {
    "transformer": "softmax",
    "local": "local",
    "sparse_transformer": "sparse",
    "longformer": "longformer",
    "linformer": "linformer",
    "reformer": "reformer",
    "sinkhorn": "sinkhorn",
    "synthesizer": "synthesizer",
    "bigbird": "bigbird",
    "linear_transformer": "linear",
    "performer": "performer",
}
# emb, heads, layers, qkv, mlp, dropout, pooling, weight decay, attention settings
Row = tuple[int, int, int, int, int, float, str, float, dict]
# the transformer_base.py sizes: what a model whose file sets nothing of its own runs
BASE: dict[str, Row] = {
    "listops": (512, 8, 4, 512, 1024, 0.1, "cls", 0.1, {}),  # base_listops_config.py @ 8d3dc39
    "text": (256, 4, 4, 256, 1024, 0.1, "cls", 0.1, {}),  # base_tc_config.py
    "retrieval": (128, 4, 4, 128, 512, 0.1, "first_token", 0.1, {}),  # base_match_config.py
    "image": (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {}),  # cifar10/transformer_base.py @ ee6649e
    "pathfinder": (32, 4, 4, 16, 32, 0.2, "mean", 0.0, {}),  # pathfinder32/transformer_base.py
}
B64 = {"block_size": 64}
OWN: dict[tuple[str, str], Row] = {
    ("listops", "performer"): (512, 8, 4, 512, 1024, 0.1, "cls", 0.1, {"num_features": 2}),
    # image/configs/cifar10/<model>_base.py
    ("image", "performer"): (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {}),
    ("image", "bigbird"): (128, 1, 1, 64, 128, 0.3, "cls", 0.0, B64),  # `num_head = 4` (sic)
    ("image", "linformer"): (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {}),
    ("image", "reformer"): (64, 8, 4, 32, 64, 0.3, "cls", 0.0, {}),
    ("image", "local"): (128, 2, 1, 64, 128, 0.3, "mean", 0.0, B64),
    ("image", "longformer"): (128, 4, 4, 64, 128, 0.3, "mean", 0.0, {}),
    ("image", "sinkhorn"): (32, 1, 1, 32, 64, 0.1, "cls", 0.7, B64),
    ("image", "sparse"): (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {}),
    ("image", "synthesizer"): (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {"mode": "random"}),
    ("image", "linear"): (128, 8, 1, 64, 128, 0.3, "cls", 0.0, {}),
    # image/configs/pathfinder32/<model>_base.py
    ("pathfinder", "performer"): (32, 8, 4, 16, 32, 0.2, "mean", 0.0, {}),
    ("pathfinder", "bigbird"): (64, 2, 4, 32, 64, 0.2, "mean", 0.0, B64),
    ("pathfinder", "linformer"): (32, 2, 1, 16, 32, 0.2, "mean", 0.0, {}),
    ("pathfinder", "reformer"): (64, 8, 2, 32, 64, 0.2, "mean", 0.0, {}),
    ("pathfinder", "local"): (64, 4, 2, 32, 64, 0.1, "mean", 0.0, B64),
    ("pathfinder", "longformer"): (32, 2, 2, 16, 32, 0.1, "mean", 0.0, {}),
    ("pathfinder", "sinkhorn"): (32, 4, 2, 16, 64, 0.2, "mean", 0.0, B64),
    ("pathfinder", "sparse"): (32, 8, 1, 16, 32, 0.2, "mean", 0.0, {}),
    ("pathfinder", "synthesizer"): (64, 4, 2, 32, 64, 0.2, "mean", 0.0, {"mode": "random"}),
    ("pathfinder", "linear"): (128, 2, 1, 64, 128, 0.2, "mean", 0.0, {}),
}
CELLS = [(task, attn) for task in BASE for attn in ATTENTIONS.values()]


def expected(task: str, attn: str) -> Row:
    return OWN.get((task, attn), BASE[task])


def row_of(cfg, settings: dict) -> Row:
    m = cfg.model
    attn = {key: cfg.attn[key] for key in settings}
    sizes = (m.dim, m.num_heads, m.num_layers, m.qkv_dim, m.ffn_dim, m.dropout, m.pooling)
    return (*sizes, cfg.trainer.weight_decay, attn)


def layered(task: str, attn: str):
    """protocol_task/lra_paper/<task>.yaml with
    protocol_attn/lra_paper/<task>/<attn>.yaml over it."""
    root = conf_dir()
    cfg = OmegaConf.load(root / "protocol_task" / "lra_paper" / f"{task}.yaml")
    cfg.attn = {}
    own = root / "protocol_attn" / "lra_paper" / task / f"{attn}.yaml"
    return OmegaConf.merge(cfg, OmegaConf.load(own)) if own.exists() else cfg


@pytest.mark.parametrize("task, attn", CELLS)
def test_each_rows_files_hold_its_published_settings(task, attn):
    cfg = layered(task, attn)
    settings = expected(task, attn)[-1]
    assert row_of(cfg, settings) == expected(task, attn)
    assert cfg.model.classifier_dim == cfg.model.ffn_dim  # classifier_head(..., mlp_dim)


def test_no_file_names_an_unknown_task_or_attention():
    files = sorted(Path(conf_dir(), "protocol_attn").rglob("*.yaml"))
    cells = {(f.parent.name, f.stem) for f in files}
    assert cells == set(OWN) and {f.parent.parent.name for f in files} == {"lra_paper"}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(BASE))
def test_lra_table1_composes_every_rows_settings(task):
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="rows"):
        for attn in ATTENTIONS.values():
            cfg = compose_config(["experiment=lra_table1", f"task={task}", f"attn={attn}"])
            validate(cfg)
            assert row_of(cfg, expected(task, attn)[-1]) == expected(task, attn), attn


def test_the_row_layer_sits_between_the_protocol_and_the_trainer_presets():
    cfg = compose_config(["protocol=lra_paper", "task=image", "attn=sinkhorn", "trainer=smoke"])
    assert (cfg.model.dim, cfg.model.num_layers, cfg.trainer.weight_decay) == (64, 2, 0.7)
    cfg = compose_config(
        ["protocol=lra_paper", "task=listops", "attn=performer", "attn.num_features=7"]
    )
    assert cfg.attn.num_features == 7  # the command line still wins
    assert (
        compose_config(["task=listops", "attn=performer"]).attn.num_features == 128
    )  # other protocol
