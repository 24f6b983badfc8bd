"""The parity group: each choice sets exactly the published code's values, for every attention."""

from __future__ import annotations

import functools
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lra_bench.attention import available
from lra_bench.attention.registry import REGISTRY
from lra_bench.compose import compose_config
from lra_bench.config import validate
from lra_bench.leaderboard import main
from lra_bench.report.load import load_csv
from lra_bench.results import COLUMNS, EARLIER_COLUMNS, append_row, run_labels

# What each choice must set, beyond parity=none: the published code's values, written out here.
GLOBAL = {
    "none": {},
    "skyformer_code": {
        "model.pooling": "mean_padded",
        "data.mask_zero": True,
        "data.test_drop_last": True,
        "trainer.amp": True,
        "trainer.amp_dtype": "fp16",
        "trainer.best_after": 0.2,
    },
    "lra_code": {},
}
ATTN = {
    "none": {},
    "skyformer_code": {
        "skyformer": {"landmarks_from": "split", "pinv_init": "batch"},
        "nystromformer": {"pinv_init": "batch", "conv_kernel": 0, "landmark_span": "padded"},
        "performer": {
            "score_scale": "inv_d",
            "padded_keys": "zeroed",
            "stabilizer": "global",
            "redraw": "fixed",
            "eps": 1e-4,
            "qr_uniform": False,
        },
        "informer": {
            "nb_features": 128,
            "sparsity_mean": "length",
            "ignore_mask": True,
            "key_samples": "shared",
        },
        "bigbird": {
            "pattern": "fixed",
            "pattern_seed": 0,  # the run's seed (conf/config.yaml: seed 0)
            "last_global": "padded",
            "random_span": "code",
            "duplicates": "keep",
            "draw": "numpy",
        },
        "linformer": {"share_kv": True, "per_head": True, "trainable": False},
        "reformer": {"wrap": True, "wrap_to": "padded", "rounds_joined": True, "key_norm": "root"},
    },
    "lra_code": {
        "sparse": {"causal": True, "block_start_summary": True},
        "synthesizer": {"mode": "random", "dot_product": True},
        "longformer": {"global_first": False},
    },
}


def leaves(cfg) -> dict[str, object]:
    """Every leaf of a composed config as 'a.b.c' -> value."""
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def settings_exist(attn: str, keys: dict[str, object]) -> bool:
    known = {f.name for f in fields(REGISTRY[attn].config)}
    return set(keys) <= known


@functools.cache
def default_leaves(attn: str) -> dict:
    """The leaves of ``attn=<attn>`` with no parity, composed once for every parity compared."""
    return leaves(compose_config([f"attn={attn}"]))


@pytest.mark.parametrize("parity", sorted(GLOBAL))
@pytest.mark.parametrize("attn", available())
def test_parity_sets_exactly_the_intended_values(parity, attn):
    keys = ATTN[parity].get(attn, {})
    if not settings_exist(attn, keys):
        pytest.skip(f"{attn} does not have the settings {sorted(keys)} yet")
    base = default_leaves(attn)
    chosen = leaves(compose_config([f"attn={attn}", f"parity={parity}"]))
    changed = {k: v for k, v in chosen.items() if base.get(k) != v}
    intended = {"parity": parity} if parity != "none" else {}
    intended |= GLOBAL[parity] | {f"attn.{k}": v for k, v in ATTN[parity].get(attn, {}).items()}
    assert changed == {k: v for k, v in intended.items() if base.get(k) != v}
    assert chosen["parity"] == parity


@pytest.mark.parametrize("parity", ["skyformer_code", "lra_code"])
@pytest.mark.parametrize("attn", available())
def test_parity_configs_validate(parity, attn):
    keys = ATTN[parity].get(attn, {})
    if not settings_exist(attn, keys):
        pytest.skip(f"{attn} does not have the settings {sorted(keys)} yet")
    cfg = compose_config([f"attn={attn}", f"parity={parity}", "task=image"])
    validate(cfg)  # raises ConfigError on a rule broken
    assert cfg.parity == parity
    assert {key: cfg.attn[key] for key in keys} == keys


def test_skyformer_table1_experiment_chooses_the_skyformer_code():
    cfg = compose_config(["experiment=skyformer_table1", "attn=bigbird"])
    assert cfg.parity == "skyformer_code" and cfg.experiment_name == "skyformer_table1"
    assert cfg.attn.pattern == "fixed" and cfg.model.pooling == "mean_padded"
    assert (
        compose_config(["experiment=skyformer_table1", "parity=none"]).parity == "none"
    )  # the command line wins


@pytest.mark.parametrize("task", ["listops", "image"])
def test_lra_table1_experiment_is_the_lra_protocol_with_the_lra_code(task):
    cfg = compose_config(["experiment=lra_table1", f"task={task}", "attn=sparse"])
    assert (cfg.protocol.name, cfg.parity, cfg.experiment_name) == (
        "lra_paper",
        "lra_code",
        "lra_table1",
    )
    assert (
        cfg.attn.causal is True and cfg.model.pooling == "cls"
    )  # the LRA code's quirk and its CLS pooling
    default = compose_config([f"task={task}", "protocol=lra_paper"])
    assert (cfg.model.dim, cfg.trainer.lr, cfg.trainer.steps) == (
        default.model.dim,
        default.trainer.lr,
        default.trainer.steps,
    )
    validate(cfg)


def test_run_labels_read_parity_and_protocol():
    cfg = compose_config(["parity=lra_code"])
    assert run_labels(cfg) == {
        "parity": "lra_code",
        "protocol": "skyformer_paper",
        "kind": "full",
    }  # no protocol node: the Skyformer setup
    with_protocol = OmegaConf.merge(
        OmegaConf.create(OmegaConf.to_container(cfg)), {"protocol": {"name": "lra_paper"}}
    )
    assert run_labels(with_protocol)["protocol"] == "lra_paper"


# ---------------------------------------------------------------- leaderboard columns


def a_row(**kw: object) -> dict[str, object]:
    row = {c: "" for c in COLUMNS} | {
        "schema": 1,
        "source": "run",
        "task": "listops",
        "attn": "softmax",
        "test_acc": 0.4,
    }
    return row | {"parity": "none", "protocol": "skyformer_paper"} | kw


def test_published_rows_carry_the_code_and_protocol_behind_them():
    root = Path(__file__).resolve().parents[1] / "results" / "published"
    sky, lra = load_csv(root / "skyformer_paper.csv"), load_csv(root / "lra_paper.csv")
    assert {(r.parity, r.protocol) for r in sky} == {("skyformer_code", "skyformer_paper")}
    assert {(r.parity, r.protocol) for r in lra} == {("lra_code", "lra_paper")}


def test_a_leaderboard_without_the_columns_loads_and_is_upgraded_on_append(tmp_path):
    old = tmp_path / "lb.csv"
    old.write_text(
        ",".join(EARLIER_COLUMNS) + "\n" + ",".join(str(a_row()[c]) for c in EARLIER_COLUMNS) + "\n"
    )
    assert [(r.parity, r.protocol) for r in load_csv(old)] == [("none", "skyformer_paper")]
    append_row(old, a_row(parity="skyformer_code", test_acc=0.5))
    lines = old.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3
    records = load_csv(old)
    assert [(r.parity, r.values["test_acc"]) for r in records] == [
        ("none", 0.4),
        ("skyformer_code", 0.5),
    ]


def test_compare_warns_once_per_kind_of_mismatch(tmp_path, capsys):
    base, new = tmp_path / "base.csv", tmp_path / "new.csv"
    for path, rows in (
        (
            base,
            [
                a_row(source="paper", parity="skyformer_code"),
                a_row(source="paper", attn="linformer", parity="skyformer_code"),
            ],
        ),
        (new, [a_row(), a_row(attn="linformer", protocol="lra_paper")]),
    ):
        path.write_text(
            ",".join(COLUMNS)
            + "\n"
            + "".join(",".join(str(r[c]) for c in COLUMNS) + "\n" for r in rows)
        )
    assert main(["compare", str(base), str(new)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("warning: parity differs on 2") and "parity=skyformer_code" in err[0]
    assert (
        err[1].startswith("warning: protocol differs on 1") and "protocol=skyformer_paper" in err[1]
    )
    new.write_text(
        ",".join(COLUMNS)
        + "\n"
        + ",".join(str(a_row(parity="skyformer_code")[c]) for c in COLUMNS)
        + "\n"
    )
    assert main(["compare", str(base), str(new)]) == 0
    assert capsys.readouterr().err == ""
