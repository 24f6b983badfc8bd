"""The peer code's training rules as settings: fp16 autocast with a scaler, the best checkpoint
only after a fraction of the steps, the test set's dropped partial batch (all off by default)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import datasets
import pytest
import torch
from omegaconf import OmegaConf

import lra_bench.runtime as runtime
import lra_bench.train as train
from fixtures_data import smoke_run
from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, config_hash, validate
from lra_bench.data.batches import Collator
from lra_bench.distributed import DistInfo
from lra_bench.errors import DataError
from lra_bench.runtime import fp32_fallback, precision_of
from lra_bench.step import make_train_state
from lra_bench.training_rules import drop_partial_batch, keeps_best

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
RULES = ("trainer.amp", "trainer.amp_dtype", "trainer.best_after", "data.test_drop_last")


def rules_of(cfg) -> tuple:
    return tuple(OmegaConf.select(cfg, key) for key in RULES)


# --- where the rules are on ----------------------------------------------------------------------


def test_the_skyformer_table_preset_turns_every_rule_on():
    cfg = compose_config(["experiment=skyformer_table1", "task=listops"])
    validate(cfg)
    assert rules_of(cfg) == (True, "fp16", 0.2, True)
    assert cfg.model.attn_fp32 is True


@pytest.mark.parametrize("protocol", ["skyformer_paper", "lra_paper"])
def test_the_rules_are_off_by_default_and_leave_the_run_hash_alone(protocol):
    cfg = compose_config(["task=listops", f"protocol={protocol}"])
    assert rules_of(cfg) == (False, "auto", 0.0, False)
    older = OmegaConf.to_container(cfg, resolve=True)  # a config from before these settings
    for section, key in (
        ("trainer", "amp_dtype"),
        ("trainer", "best_after"),
        ("data", "test_drop_last"),
    ):
        del older[section][key]
    before = config_hash(cfg)
    assert config_hash(OmegaConf.create(older)) == before
    on = compose_config(["task=listops", f"protocol={protocol}", "trainer.best_after=0.2"])
    assert config_hash(on) != before


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.amp_dtype=fp8", "trainer.amp_dtype"),
        ("trainer.best_after=1.0", "trainer.best_after"),
    ],
)
def test_bad_values_get_one_line(override, key):
    with pytest.raises(ConfigError, match=f"invalid setting {key}="):
        validate(compose_config(["task=listops", override]))


# --- precision -----------------------------------------------------------------------------------


def test_fp16_means_fp16_with_a_scaler_on_cuda_and_fp32_on_a_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)  # a GPU with native bf16
    assert precision_of(True, CUDA, "fp16") == ("fp16-amp", torch.float16)
    assert precision_of(True, CUDA, "auto") == ("bf16-amp", torch.bfloat16)  # the control
    assert precision_of(True, CUDA, "bf16") == ("bf16-amp", torch.bfloat16)
    assert precision_of(True, CPU, "fp16") == ("fp32", None)
    assert precision_of(True, CPU, "auto") == ("bf16-amp", torch.bfloat16)
    assert precision_of(False, CUDA, "fp16") == ("fp32", None)


@cache
def smoke_trainer():
    return compose_config(["task=listops", "trainer=smoke"]).trainer


def trainer(**values):
    return OmegaConf.merge(smoke_trainer(), values)


def test_a_cpu_run_says_once_that_it_trains_in_fp32(capsys):
    model = torch.nn.Linear(4, 2)
    state = make_train_state(model, trainer(amp=True, amp_dtype="fp16"), CPU, DistInfo())
    assert state.amp_dtype is None and not state.scaler.is_enabled()
    lines = [line for line in capsys.readouterr().out.splitlines() if "fp32" in line]
    assert lines == [fp32_fallback(trainer(amp=True, amp_dtype="fp16"), CPU)]
    assert "needs a CUDA device" in lines[0]
    make_train_state(model, trainer(amp=True, amp_dtype="bf16"), CPU, DistInfo())
    assert fp32_fallback(trainer(amp=True, amp_dtype="fp16"), CUDA) is None
    assert "fp32" not in capsys.readouterr().out


def fp16_forward_dtypes(device: torch.device, *overrides: str) -> dict[str, torch.dtype]:
    """Under the skyformer_table1 preset on ``device``: the dtype of the query/key/value
    projection's output and of the attention core's input, in one training forward pass."""
    preset = ["experiment=skyformer_table1", "trainer=smoke", "attn=softmax", *overrides]
    cfg = compose_config(preset)
    model = train.build_model(cfg).to(device)
    state = make_train_state(model, cfg.trainer, device, DistInfo())
    block = model.encoder.blocks[0].attn
    seen: dict[str, torch.dtype] = {}
    block.qkv.register_forward_hook(lambda m, i, out: seen.setdefault("qkv", out.dtype) and None)
    block.attention.register_forward_hook(
        lambda m, i, out: seen.setdefault("core", i[0].dtype) and None
    )
    collate = Collator(32, "max_len", mask_zero=True, dual=False)
    batch = collate({"input_ids": [[3 + i % 7 for i in range(32)], [4] * 20], "label": [0, 1]})
    with runtime.autocast(device, state.amp_dtype):
        model(runtime.to_device(batch, device))
    seen["scaler"] = state.scaler.is_enabled()
    return seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_fp16_autocast_scales_gradients_and_keeps_the_attention_in_fp32():
    seen = fp16_forward_dtypes(CUDA)
    assert seen == {"qkv": torch.float16, "core": torch.float32, "scaler": True}


def test_on_a_cpu_the_preset_runs_in_fp32_without_a_scaler():
    seen = fp16_forward_dtypes(CPU)
    assert seen == {"qkv": torch.float32, "core": torch.float32, "scaler": False}
    seen = fp16_forward_dtypes(CPU, "trainer.amp_dtype=bf16")  # autocast on: the core stays fp32
    assert seen == {"qkv": torch.bfloat16, "core": torch.float32, "scaler": False}


# --- the best checkpoint after 20% ---------------------------------------------------------------


def test_keeps_best_only_after_the_fraction_of_steps():
    cfg = trainer(steps=100, best_after=0.2)
    assert [keeps_best(cfg, s) for s in (1, 20, 21, 100)] == [False, False, True, True]
    assert keeps_best(trainer(steps=100, best_after=0.0), 1)  # off: every new best is kept


def scripted_run(tmp_path, monkeypatch, best_after: float, accuracies: list[float]) -> Path:
    """A smoke run (evaluations at steps 3 and 6) whose
    dev and test accuracies are ``accuracies``."""
    scripted = iter(accuracies)
    monkeypatch.setattr(train, "evaluate", lambda *args: next(scripted))
    cfg = compose_config(
        [
            "trainer=smoke",
            "trainer.threads=1",
            "attn=softmax",
            f"trainer.best_after={best_after}",
            f"paths.run_dir={tmp_path / 'run'}",
            f"paths.leaderboard={tmp_path / 'lb.csv'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "data.gen_workers=1",
        ]
    )
    smoke_run(cfg)
    return tmp_path / "run"


def test_an_early_best_is_tracked_but_not_kept_so_the_last_weights_are_tested(
    tmp_path, monkeypatch
):
    run = scripted_run(tmp_path, monkeypatch, 0.5, [0.9, 0.5, 0.25])  # 3 > 0.5 * 6 is false
    assert not (run / "best.pt").exists()
    row = next(csv.DictReader((tmp_path / "lb.csv").open()))
    assert (row["best_step"], row["val_acc"], row["test_acc"]) == ("3", "0.9", "0.25")


def test_without_the_rule_the_early_best_is_kept(tmp_path, monkeypatch):
    run = scripted_run(tmp_path, monkeypatch, 0.0, [0.9, 0.5, 0.25])
    assert torch.load(run / "best.pt", weights_only=False)["step"] == 3


# --- the test set's dropped partial batch --------------------------------------------------------


def test_drop_partial_batch_keeps_whole_batches_in_file_order():
    split = datasets.Dataset.from_dict({"label": list(range(2000))})
    kept = drop_partial_batch(split, 32, True)
    assert len(kept) == 1984 and kept["label"] == list(range(1984))  # ListOps under the peer code
    assert len(drop_partial_batch(split, 32, False)) == 2000
    assert len(drop_partial_batch(split, 40, True)) == 2000  # no partial batch: unchanged
    with pytest.raises(DataError, match="fewer than one batch of trainer.batch_size=4000"):
        drop_partial_batch(split, 4000, True)


@pytest.mark.parametrize("drop, expected", [(True, 12), (False, 14)])
def test_the_run_tests_on_whole_batches_only_when_asked(tmp_path, drop, expected):
    cfg = compose_config(
        [
            "trainer=smoke",
            "data.limit_eval=14",  # batches of trainer.batch_size=4: 12 + a partial 2
            f"data.test_drop_last={drop}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "data.gen_workers=1",
        ]
    )
    data = train.prepare_data(cfg, DistInfo(), CPU)
    assert sum(len(batch["label"]) for batch in data.test) == expected
    assert sum(len(batch["label"]) for batch in data.val) == 14  # the dev set keeps every example
