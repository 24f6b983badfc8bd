"""parity=skyformer_code against restatements of the published code's whole forward passes.

The restatements (``lra_bench.testing.published_code``) follow the code loop by loop, not this
package's modules; both sides get the same pinned draw (Reformer's rotations, BigBird's block
ranking, Skyformer's landmarks, Performer's features, Informer's sampled keys, Linformer's
projection), float64, n in {512, 1024, 2048, 4096} (2048 and 4096 marked slow), with and
without padding, two hash rounds. Each quirk switched back to its default must break the match
where it applies.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lra_bench import fidelity
from lra_bench.attention import build_attention
from lra_bench.attention.bigbird import code_plan, numpy_code_draw
from lra_bench.attention.sampling import seeded_generator as seeded
from lra_bench.compose import compose_config
from lra_bench.fidelity import (
    CODE_LENGTHS,
    OUTSIDE_FORWARD,
    QUIRKS,
    RANKED,
    attn_settings,
    code_difference,
    main,
    ours_and_code,
)
from lra_bench.testing import check_attention
from lra_bench.testing.published_code import _code_rows, bigbird_code_blocks, bigbird_code_numpy

ROOT = Path(__file__).resolve().parents[1]

TOLERANCE = 1e-6  # max |ours - code| / max |code|


# 2048 and 4096: 1-16 s each on one thread (softmax and kernelized materialise n x n)
LENGTHS = [512, 1024] + [pytest.param(n, marks=pytest.mark.slow) for n in (2048, 4096)]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("attn", sorted(QUIRKS))
def test_parity_matches_the_restated_code(attn, n, padded):
    """BigBird here with the code's own numpy draw for the run's seed: nothing pinned."""
    out, ref = ours_and_code(attn, n, padded, {})
    assert ref.numel() >= 2 * 8 * n and ref.abs().max() > 1e-3  # every real token compared
    assert float((out - ref).abs().max() / ref.abs().max()) <= TOLERANCE


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("n", LENGTHS)
def test_bigbird_plan_with_a_ranked_draw_matches_the_restated_code(n, padded):
    """This module's generator in place of numpy, both pinned to one ranking of the blocks."""
    assert code_difference("bigbird", n, padded, ranked=True) <= TOLERANCE


# (attention, quirk, n, padded): where the quirk shows; off = the setting's default
CONTROLS = [
    ("reformer", "rounds_joined", 1024, False),
    ("reformer", "wrap_to", 1024, True),
    ("reformer", "key_norm", 1024, False),  # on query-keys of small norm (CONTROL_SCALE)
    ("bigbird", "draw", 1024, False),  # this module's generator, not numpy's
    ("bigbird", "random_span", 2048, False),  # the code draws from blocks 1-9 only
    ("bigbird", "random_span", 1024, False),  # rows 13, 14 draw window blocks in seed 1
    ("bigbird", "duplicates", 1024, False),
    ("bigbird", "last_global", 1024, True),
    ("nystromformer", "landmark_span", 1024, True),
    ("nystromformer", "pinv_init", 1024, False),  # on q, k x 2 (CONTROL_SCALE)
    ("nystromformer", "conv_kernel", 1024, False),
    ("skyformer", "pinv_init", 1024, False),  # on q, k x 0.3: six steps not yet converged
    ("linformer", "share_kv", 1024, False),
    ("linformer", "per_head", 1024, False),
    ("performer", "score_scale", 1024, False),
    ("performer", "padded_keys", 1024, True),
    ("performer", "stabilizer", 1024, False),  # through eps only
    ("performer", "eps", 1024, False),
    ("informer", "nb_features", 1024, False),
    ("informer", "sparsity_mean", 1024, False),
    ("informer", "ignore_mask", 1024, True),
]


@pytest.mark.parametrize("attn, quirk, n, padded", CONTROLS)
def test_each_quirk_switched_off_breaks_the_match(attn, quirk, n, padded):
    assert code_difference(attn, n, padded, off=quirk) > 10 * TOLERANCE


def test_every_quirk_has_a_control():
    assert {(a, q) for a, q, _, _ in CONTROLS} == {(a, q) for a in QUIRKS for q in QUIRKS[a]}


@pytest.mark.parametrize("attn", sorted(QUIRKS))
def test_every_parity_setting_is_a_controlled_quirk_or_outside_the_forward_pass(attn):
    """What parity=skyformer_code changes for an attention is exactly its controlled quirks plus
    the settings that act only on training or on the draws (each named with its test)."""
    default, parity = attn_settings(attn, "none"), attn_settings(attn, "skyformer_code")
    changed = {key for key, value in parity.items() if default.get(key) != value}
    assert changed == set(QUIRKS[attn]) | set(OUTSIDE_FORWARD.get(attn, {}))


def test_the_command_reports_the_comparison_not_a_figure(monkeypatch, capsys):
    """A restatement that stops matching shows in the command's table: its rows come from the
    comparison itself."""
    restated = dict(fidelity.RESTATED)
    restated["softmax"] = lambda module, q, k, v, real, rng: fidelity.softmax_code(
        q, k, 1.01 * v, real
    )
    monkeypatch.setattr(fidelity, "RESTATED", restated)
    monkeypatch.setattr(fidelity, "QUIRKS", {"softmax": (), "linformer": ()})
    monkeypatch.setattr(fidelity, "table", lambda n: "")
    assert main(["--code-lengths", "512"]) == 0
    rows = {
        line.split("|")[1].strip(): [float(x) for x in line.strip("| \n").split(" | ")[2:]]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| softmax |") or line.startswith("| linformer |")
    }
    assert all(abs(x - 0.01 / 1.01) < 1e-3 for x in rows["softmax"])  # |ours - code| / |code|
    assert all(x <= TOLERANCE for x in rows["linformer"])


def test_the_pinned_bigbird_draw_repeats_window_blocks_at_1024():
    """The precondition of the duplicates control: seed 1's draw has rows 13 or 14 attend a
    window block twice (the code's last middle rows draw among all middle blocks)."""
    ranking = np.argsort(np.random.RandomState(1).random_sample((2, 16, 16)), axis=-1)
    blocks = bigbird_code_blocks(1024, 64, 3, ranking)
    repeated = [
        j
        for row in (13, 14)
        for h in range(2)
        for j in blocks[h, row - 1].tolist()
        if abs(j - row) <= 1
    ]
    assert repeated


@pytest.mark.parametrize("n", [512, 640, 1024, 2048, 3072, 4096])
def test_bigbird_code_plan_is_the_restated_codes_candidates(n):
    """Every row's candidate blocks, ours against the restated code (640: the two-range plan)."""
    bs, r, nb = 64, 3, n // 64
    ours = code_plan(nb, bs, r, 1, torch.device("cpu"))
    for i in range(1, nb - 1):
        code = _code_rows(n, bs, r, i)
        assert [count for count, _ in ours] == [count for _, _, count, _ in code]
        for (_, allowed), (_, _, _, cands) in zip(ours, code, strict=True):
            assert set(torch.nonzero(allowed[0, i]).flatten().tolist()) == cands, (n, i)


def test_bigbird_code_plan_ranges():
    at = {n: code_plan(n // 64, 64, 3, 1, torch.device("cpu"))[0][1][0] for n in (1024, 2048)}
    cols_2048 = torch.nonzero(at[2048][1:-1].any(0)).flatten().tolist()
    assert cols_2048 == list(range(1, 10))  # the first 704 tokens, globals excluded
    assert at[1024][13, 12] and at[1024][14, 13]  # last middle rows may draw their window
    assert not at[1024][12, 12]


def test_bigbird_pattern_follows_the_run_seed_and_is_shared_by_the_batch():
    def blocks(seed: int) -> torch.Tensor:
        node = compose_config(["attn=bigbird", "parity=skyformer_code", f"seed={seed}"]).attn
        assert node.pattern_seed == seed
        attn = build_attention(node, head_dim=8, num_heads=2, max_len=2048).train()
        return attn.draw_random_blocks(torch.tensor([32, 32, 20]), 32, 2)

    a, b = blocks(3), blocks(4)
    assert torch.equal(a, blocks(3)) and not torch.equal(a, b)
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])


def test_nystromformer_padded_span_changes_only_padded_sequences():
    base = {"name": "nystromformer", "num_landmarks": 8, "conv_kernel": 0}
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 64, 8, generator=g, dtype=torch.float64) for _ in "qkv")
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False
    outs = [
        build_attention(base | {"landmark_span": s}, head_dim=8, num_heads=2, max_len=64)(
            q, k, v, mask
        )
        for s in ("real", "padded")
    ]
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert not torch.allclose(outs[0][1, :, :40], outs[1][1, :, :40])


def test_reformer_joined_rounds_need_more_than_one_round_to_differ():
    g = torch.Generator().manual_seed(0)
    q, _, v = (torch.randn(2, 2, 256, 8, generator=g, dtype=torch.float64) for _ in "qkv")
    base = {"name": "reformer", "chunk_size": 32, "num_hashes": 1}
    outs = [
        build_attention(base | {"rounds_joined": j}, head_dim=8, num_heads=2, max_len=256)
        .double()
        .eval()(q, q, v)
        for j in (False, True)
    ]
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.slow  # about 20 s: both tables, every parity file
def test_fidelity_command_prints_both_tables(capsys):
    assert main(["--n", "256", "--code-lengths", "512"]) == 0
    out = capsys.readouterr().out
    assert "Against the published code" in out and "| reformer | parity=skyformer_code |" in out
    row = next(line for line in out.splitlines() if line.startswith("| nystromformer | parity"))
    assert all(float(x) <= TOLERANCE for x in row.strip("| ").split(" | ")[2:])


def test_fidelity_command_rejects_a_length_it_cannot_restate(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--code-lengths", "600"])
    assert exit_info.value.code == 2
    assert "--code-lengths: 600 is not a power of 2" in capsys.readouterr().err


def test_docs_table_agrees_with_the_tested_claims():
    """docs/fidelity.md's table against the code: parity rows within the tolerance, each
    control broken at the case this file tests it."""
    rows = {}
    for line in (ROOT / "docs" / "fidelity.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + 2 * len(CODE_LENGTHS) and cells[0] in QUIRKS:
            rows[(cells[0], cells[1].split(":")[0].removeprefix("... with "))] = cells[2:]
    assert len(rows) == len(QUIRKS) + len(RANKED) + sum(len(q) for q in QUIRKS.values())
    for attn in QUIRKS:
        assert all(float(x) <= TOLERANCE for x in rows[(attn, "parity=skyformer_code")])
    for attn in RANKED:
        ranked = rows[(attn, "parity=skyformer_code, ranked draw")]
        assert all(float(x) <= TOLERANCE for x in ranked)
    for attn, quirk, n, padded in CONTROLS:
        column = 2 * CODE_LENGTHS.index(n) + int(padded)
        assert float(rows[(attn, quirk)][column]) > 10 * TOLERANCE


@pytest.mark.parametrize("attn", sorted(QUIRKS))
def test_parity_settings_train_in_bf16_with_gradients(attn):
    settings = {k: v for k, v in attn_settings(attn, "skyformer_code").items() if k != "name"}
    small = {
        "reformer": {"chunk_size": 16},
        "bigbird": {"block_size": 16},
        "nystromformer": {"num_landmarks": 16},
        "skyformer": {"num_landmarks": 16},
        "linformer": {"proj_dim": 16},
        "performer": {"num_features": 16},
    }
    check_attention(attn, checks=["gradients", "bf16"], **settings | small.get(attn, {}))


@pytest.mark.parametrize("n", [512, 640, 1024, 2048, 3072, 4096])
def test_bigbird_numpy_draw_is_the_codes_draw(n):
    for seed in (0, 42):
        ours = torch.from_numpy(numpy_code_draw(n // 64, 64, 3, 2, seed))[:, 1:-1]
        assert torch.equal(ours, bigbird_code_numpy(n, 64, 3, 2, seed))


def test_bigbird_codes_seed_42_pattern_repeats_a_window_block_at_1024():
    """Row 13 of the code's seed-42 pattern (the code's default --random) draws block 14."""
    blocks = bigbird_code_numpy(1024, 64, 3, 2, 42)
    assert any(abs(j - 13) <= 1 for h in range(2) for j in blocks[h, 12].tolist())


@pytest.mark.parametrize("padded", [False, True])
def test_informer_shared_key_samples_are_the_codes_randint_draw(padded):
    """One ``torch.randint(n, (n, U))`` for the batch and heads, from the module's generator
    (the code calls it on torch's global one); per sequence (the default) draws differ."""
    settings = attn_settings("informer", "skyformer_code")
    attn = build_attention(settings, head_dim=8, num_heads=2, max_len=512).eval()
    lengths = torch.tensor([512, 300 if padded else 512])
    drawn = attn.draw_key_samples(lengths, 512, 2)
    c = math.ceil(128 / math.log(512))  # 21
    expected = torch.randint(512, (512, c * 7), generator=seeded(settings["seed"]))  # U = 147
    assert torch.equal(drawn, expected.expand(2, 2, -1, -1))
    attn.cfg.key_samples = "per_sequence"
    own = attn.draw_key_samples(lengths, 512, 2)
    assert not torch.equal(own[0, 0], own[0, 1]) and not torch.equal(own[0, 0], own[1, 0])


def test_performer_features_keep_torchs_qr_factor_as_the_code_does():
    """qr_uniform: false gives each block's Q^T as torch's QR returns it; the default flips rows
    to diag(R) > 0, which on this draw changes some."""
    settings = attn_settings("performer", "skyformer_code") | {"num_features": 16}
    attn = build_attention(settings, head_dim=8, num_heads=2, max_len=64).eval()
    g = seeded(settings["seed"])
    gauss = torch.randn(2, 8, 8, generator=g, dtype=torch.float64)
    norms = torch.randn(16, 8, generator=g, dtype=torch.float64).norm(dim=-1, keepdim=True)
    q, r = torch.linalg.qr(gauss)
    expected = q.transpose(-1, -2).reshape(16, 8) * norms
    torch.testing.assert_close(attn.draw_features(8), expected, rtol=0, atol=1e-12)
    assert (torch.diagonal(r, dim1=-2, dim2=-1) < 0).any()
    attn.cfg.qr_uniform = True
    assert not torch.allclose(attn.draw_features(8), expected)
