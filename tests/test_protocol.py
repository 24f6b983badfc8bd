"""The protocol switch: the LRA paper's per-task values,
its optimiser and schedules, its model options."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from fixtures_data import (
    aan_rows,
    compose,
    smoke_overrides,
    smoke_run,
    write_aan,
    write_aclimdb,
    write_cifar_batches,
)
from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, validate
from lra_bench.data.batches import Collator
from lra_bench.model import build_model, sinusoidal_table
from lra_bench.optim import make_optimizer

# Transcribed from google-research/long-range-arena (lra_benchmarks/...) at
# HEAD (cd31e5c): batch, lr, weight decay, schedule, warm-up, steps, eval
# every; the Transformer's (transformer_base.py) dim, heads, layers, qkv, mlp,
# dropout, pooling, positions. Other attentions: tests/test_protocol_rows.py.
LRA = {
    "listops": (
        (32, 0.05, 0.1, "warmup_rsqrt", 1000, 5000, 50),
        (512, 8, 4, 512, 1024, 0.1, "cls", "sinusoidal"),
    ),
    "text": (
        (32, 0.05, 0.1, "warmup_rsqrt", 8000, 20000, 100),
        (256, 4, 4, 256, 1024, 0.1, "cls", "sinusoidal"),
    ),
    "retrieval": (
        (32, 0.05, 0.1, "warmup_rsqrt", 8000, 5000, 100),
        (128, 4, 4, 128, 512, 0.1, "first_token", "sinusoidal"),
    ),
    "image": (
        (256, 5e-4, 0.0, "warmup_cosine", 175, 35000, 175),
        (128, 8, 1, 64, 128, 0.3, "cls", "learned"),
    ),
    "pathfinder": (
        (512, 1e-3, 0.0, "warmup_cosine", 312, 62400, 312),
        (32, 4, 4, 16, 32, 0.2, "mean", "sinusoidal"),
    ),
    "pathx": (
        (64, 1e-3, 0.0, "warmup_cosine", 2500, 500000, 2500),
        (32, 2, 1, 16, 32, 0.1, "mean", "learned"),
    ),
}


@pytest.mark.parametrize("task", sorted(LRA))
def test_lra_paper_sets_the_lra_values(task):
    cfg = compose_config([f"task={task}", "protocol=lra_paper"])
    validate(cfg)
    t, m = cfg.trainer, cfg.model
    assert cfg.protocol.name == "lra_paper"
    assert (
        t.batch_size,
        t.lr,
        t.weight_decay,
        t.schedule,
        t.warmup_steps,
        t.steps,
        t.eval_every,
    ) == LRA[task][0]
    assert (
        m.dim,
        m.num_heads,
        m.num_layers,
        m.qkv_dim,
        m.ffn_dim,
        m.dropout,
        m.pooling,
        m.positions,
    ) == LRA[task][1]
    assert m.classifier_dim == m.ffn_dim  # classifier_head(encoded, num_classes, mlp_dim)
    assert (list(t.betas), t.eps, t.clip_value, t.cycle_steps) == ([0.9, 0.98], 1e-9, None, None)
    assert (m.init, m.attn_bias, m.norm_eps) == ("lra", False, 1e-6)
    assert m.dual_head == ("lra" if task == "retrieval" else "nli")


@pytest.mark.parametrize("task", sorted(LRA))
def test_default_protocol_is_the_skyformer_papers(task):
    cfg = compose_config([f"task={task}"])
    assert cfg.protocol.name == "skyformer_paper"
    assert (
        cfg.trainer.schedule,
        list(cfg.trainer.betas),
        cfg.trainer.eps,
        cfg.trainer.weight_decay,
        cfg.trainer.clip_value,
    ) == ("one_cycle", [0.9, 0.999], 1e-6, 0.0, 1.0)
    m = cfg.model
    assert (m.pooling, m.positions, m.qkv_dim, m.dual_head, m.init, m.attn_bias, m.norm_eps) == (
        "mean",
        "learned",
        None,
        "nli",
        "default",
        True,
        1e-5,
    )
    assert not {"batch_size", "lr", "warmup_steps", "eval_every", "steps"} & set(cfg.task)


def test_smoke_preset_shrinks_the_run_under_lra_paper():
    cfg = compose_config(["task=text", "protocol=lra_paper", "trainer=smoke"])
    t, m = cfg.trainer, cfg.model
    assert (t.steps, t.batch_size, t.warmup_steps, t.eval_every) == (6, 4, 2, 3)
    assert (m.dim, m.num_layers, m.num_heads, m.ffn_dim, m.qkv_dim, m.classifier_dim) == (
        64,
        2,
        2,
        128,
        None,
        128,
    )
    assert (t.schedule, t.lr, m.pooling, m.positions, m.init) == (
        "warmup_rsqrt",
        0.05,
        "cls",
        "sinusoidal",
        "lra",
    )
    default_smoke = compose_config(["task=text", "trainer=smoke"])
    assert OmegaConf.to_container(default_smoke.model) == OmegaConf.to_container(
        compose_config(["task=text"]).model
    )


def test_cpu_demo_is_unchanged():
    cfg = compose_config(["experiment=cpu_demo"])
    t = cfg.trainer
    assert cfg.protocol.name == "skyformer_paper"
    assert (t.steps, t.batch_size, t.lr, t.warmup_steps, t.eval_every, t.schedule) == (
        3000,
        32,
        1e-3,
        300,
        500,
        "one_cycle",
    )
    assert (cfg.model.dim, cfg.model.num_layers, cfg.task.max_len) == (64, 2, 256)


def test_schedule_settings_are_checked():
    # LRA's retrieval warms up for longer than it trains:
    # allowed for its schedule, not for OneCycleLR
    validate(compose_config(["task=retrieval", "protocol=lra_paper"]))
    with pytest.raises(ConfigError, match="trainer.warmup_steps"):
        validate(compose_config(["trainer.warmup_steps=60000"]))
    with pytest.raises(ConfigError, match="trainer.schedule"):
        validate(compose_config(["trainer.schedule=cyclic"]))
    with pytest.raises(ConfigError, match="trainer.warmup_steps"):
        validate(compose_config(["protocol=lra_paper", "trainer.warmup_steps=0"]))
    with pytest.raises(ConfigError, match="model.pooling"):
        validate(compose_config(["model.pooling=max"]))
    with pytest.raises(ConfigError, match="model.qkv_dim"):
        validate(compose_config(["model.qkv_dim=63"]))
    with pytest.raises(ConfigError, match="model.classifier_dim"):
        validate(
            compose_config(["task=retrieval", "model.dual_head=lra", "model.classifier_dim=1"])
        )


# --- optimiser and schedules -------------------------------------------------------------------


def trainer(**values):
    base = {
        "lr": 0.05,
        "betas": [0.9, 0.98],
        "eps": 1e-9,
        "weight_decay": 0.0,
        "steps": 5000,
        "warmup_steps": 1000,
    }
    return OmegaConf.create({**base, **values})


def one_parameter(start: torch.Tensor | None = None) -> torch.nn.Module:
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(1) if start is None else start.clone())
    return module


def rates(tc, steps):
    """The learning rate each update uses: the rate before update t is the schedule at t."""
    opt, sched = make_optimizer(one_parameter(), tc)
    out = []
    for t in range(max(steps) + 1):
        if t in steps:
            out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_rsqrt_matches_its_closed_form():
    steps = [0, 1, 500, 999, 1000, 1001, 4000]
    warm = 0.05 / math.sqrt(1000)  # peak rate at the end of warm-up (1000 steps)
    expected = [0.0, 0.001 * warm, 0.5 * warm, 0.999 * warm,
                warm, 0.05 / math.sqrt(1001), 0.05 / math.sqrt(4000)]  # fmt: skip
    assert rates(trainer(schedule="warmup_rsqrt"), steps) == pytest.approx(
        expected, rel=1e-12, abs=0
    )


def test_warmup_cosine_matches_its_closed_form():
    tc = trainer(schedule="warmup_cosine", lr=5e-4, steps=35000, warmup_steps=175)
    steps = [0, 100, 175, 175 + 8750, 175 + 17500, 34999]
    expected = [0.0, 5e-4 * 100 / 175, 5e-4, 5e-4 * (1 + math.cos(math.pi / 4)) / 2, 2.5e-4,
                5e-4 * (1 + math.cos(math.pi * (34999 - 175) / 35000)) / 2]  # fmt: skip
    assert rates(tc, steps) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    # a cycle shorter than the run restarts at the peak, as the LRA factor does (progress % 1)
    restart = rates(
        trainer(schedule="warmup_cosine", steps=40, warmup_steps=2, cycle_steps=10), [2, 7, 12]
    )
    assert restart == pytest.approx([0.05, 0.025, 0.05], rel=1e-12)


def test_one_cycle_is_the_previous_schedule():
    tc = trainer(schedule="one_cycle", lr=1e-4, steps=100, warmup_steps=10)
    got = rates(tc, [0, 5, 10, 55, 99])
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=1e-4, total_steps=100, pct_start=0.1, anneal_strategy="linear"
    )
    want = []
    for t in range(100):
        if t in (0, 5, 10, 55, 99):
            want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert got == want


def flax_adam_reference(params, grads_per_step, lrs, wd, b1=0.9, b2=0.98, eps=1e-9):
    """flax.optim.Adam.apply_param_gradient, step by step, in float64."""
    p, m, v = params.clone(), torch.zeros_like(params), torch.zeros_like(params)
    for step, (g, lr) in enumerate(zip(grads_per_step, lrs, strict=True)):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = step + 1.0
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps) - lr * wd * p
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("schedule", ["warmup_rsqrt", "warmup_cosine"])
def test_adamw_is_flax_adam_with_weight_decay(seed, schedule):
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=gen, dtype=torch.float64) for _ in range(12)]
    tc = trainer(schedule=schedule, weight_decay=0.1, warmup_steps=4, steps=12)
    module = one_parameter(start)
    param = module.weight
    opt, sched = make_optimizer(module, tc)
    lrs = []
    for g in grads:
        lrs.append(opt.param_groups[0]["lr"])
        param.grad = g.clone()
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and max(lrs) > 0
    torch.testing.assert_close(
        param.detach(), flax_adam_reference(start, grads, lrs, wd=0.1), rtol=1e-12, atol=1e-12
    )


def test_schedule_resumes_from_its_state():
    tc = trainer(schedule="warmup_cosine", steps=30, warmup_steps=5)
    opt, sched = make_optimizer(one_parameter(), tc)
    for _ in range(12):
        opt.step()
        sched.step()
    state = (opt.state_dict(), sched.state_dict())
    opt2, sched2 = make_optimizer(one_parameter(), tc)
    opt2.load_state_dict(state[0])
    sched2.load_state_dict(state[1])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# --- model options -------------------------------------------------------------------------------


def lra_model(task="listops", *extra):
    torch.manual_seed(0)
    small = [
        "task.max_len=64",
        "model.dim=32",
        "model.num_heads=2",
        "model.num_layers=2",
        "model.ffn_dim=64",
        "model.classifier_dim=64",
    ]
    return build_model(
        compose_config([f"task={task}", "protocol=lra_paper", *small, *extra])
    ).eval()


def test_sinusoidal_table_is_lras():
    table = sinusoidal_table(50, 8)
    for pos, i in [(0, 0), (3, 1), (49, 3), (17, 2)]:
        angle = pos / 10000 ** (2 * i / 8)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_lra_model_has_a_cls_token_fixed_positions_and_bias_free_projections():
    model = lra_model("listops", "model.qkv_dim=16")
    enc = model.encoder
    assert enc.cls.shape == (1, 1, 32) and not enc.cls.any()
    assert enc.position.shape == (65, 32) and "position" not in dict(model.named_parameters())
    attn = enc.blocks[0].attn
    assert attn.qkv.bias is None and attn.out.bias is None
    assert (
        attn.qkv.weight.shape == (48, 32)
        and attn.out.weight.shape == (32, 16)
        and attn.head_dim == 8
    )
    assert enc.norm.eps == 1e-6
    assert 0.9 < enc.token.weight.std().item() < 1.1  # flax nn.Embed: normal(stddev=1.0)
    ffn_bias = enc.blocks[0].ffn[0].bias
    assert ffn_bias.abs().max().item() < 1e-4  # normal(stddev=1e-6)
    assert not model.head[0].bias.any()


@pytest.mark.parametrize(
    "task,pooling", [("listops", "cls"), ("pathfinder", "mean"), ("listops", "first_token")]
)
def test_lra_pooling_is_padding_invariant(task, pooling):
    model = lra_model(task, f"model.pooling={pooling}")
    seqs = [[3, 5, 7, 9, 11, 2, 4], [6, 6, 1, 12, 13, 14, 15, 2, 3, 4, 5, 1]]
    tight = Collator(64, "batch", mask_zero=False, dual=False)({"input_ids": seqs, "label": [0, 1]})
    loose = Collator(64, "max_len", mask_zero=False, dual=False)(
        {"input_ids": seqs, "label": [0, 1]}
    )
    with torch.no_grad():
        torch.testing.assert_close(model(tight), model(loose), rtol=1e-5, atol=1e-6)


def test_cls_pooling_reads_the_cls_token():
    model = lra_model("listops")
    seqs = [[3, 5, 7, 9], [3, 5, 7, 9]]
    batch = Collator(64, "batch", mask_zero=False, dual=False)({"input_ids": seqs, "label": [0, 1]})
    with torch.no_grad():
        base = model(batch)
        model.encoder.cls.normal_()  # not a constant: LayerNorm removes a constant shift
        moved = model(batch)
    assert not torch.allclose(base, moved)


def test_first_token_pooling_reads_only_the_first_position_output():
    model = lra_model(
        "listops",
        "model.pooling=first_token",
        "model.num_layers=1",
        "attn=local",
        "attn.block_size=2",
    )
    collate = Collator(64, "batch", mask_zero=False, dual=False)
    with torch.no_grad():
        a = model(collate({"input_ids": [[3, 5, 7, 9, 11, 13]], "label": [0]}))
        b = model(
            collate({"input_ids": [[3, 5, 7, 9, 12, 14]], "label": [0]})
        )  # far tokens changed
        c = model(
            collate({"input_ids": [[4, 5, 7, 9, 11, 13]], "label": [0]})
        )  # first token changed
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_lra_dual_head_concatenates_both_documents():
    model = lra_model("retrieval")
    sizes = [layer.weight.shape for layer in model.head if isinstance(layer, torch.nn.Linear)]
    assert sizes == [(64, 64), (32, 64), (2, 32)]  # [u, v] -> mlp -> mlp/2 -> classes


# --- smoke runs ----------------------------------------------------------------------------------


def data_for(task, tmp_path):
    """(data root, extra overrides) for a seconds-long run of ``task`` on fixture files."""
    if task == "text":
        return write_aclimdb(tmp_path / "aclImdb"), []
    if task == "retrieval":
        write_aan(tmp_path / "lra_release" / "lra_release" / "tsv_data", aan_rows())
        return tmp_path / "lra_release", ["data.max_bytes=256"]
    if task == "image":
        folder = tmp_path / "cifar-10-batches-py"
        write_cifar_batches(folder, 6, 10)
        return folder, []
    if task == "pathfinder":
        from test_pathfinder_reader import write_release

        write_release(tmp_path / "release")
        return None, ["data.source=release", f"data.root={tmp_path / 'release'}"]
    return None, ["data.gen_workers=1"]


# image and pathfinder are the longest runs; the quick loop trains on them in test_data_image and
# test_pathfinder_reader, and checks their lra_paper values without training
@pytest.mark.parametrize(
    "task",
    [
        "listops",
        "text",
        "retrieval",
        pytest.param("image", marks=pytest.mark.slow),
        pytest.param("pathfinder", marks=pytest.mark.slow),
    ],
)
def test_smoke_run_under_lra_paper(task, tmp_path):
    root, extra = data_for(task, tmp_path)
    overrides = [
        o.replace("attn=skyformer", "attn=softmax")
        for o in smoke_overrides(tmp_path)
        if "num_landmarks" not in o
    ]
    cfg = compose(task, root, tmp_path / "cache", *overrides, "protocol=lra_paper", *extra)
    assert (cfg.protocol.name, cfg.trainer.steps) == ("lra_paper", 6)
    result = smoke_run(cfg)
    assert (
        result["status"] == "complete" and result["steps"] == 6 and 0.0 <= result["test_acc"] <= 1.0
    )
