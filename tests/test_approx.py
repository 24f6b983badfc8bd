"""Spectral error of the approximations: the V = I operator, convergence in features, the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from lra_bench import approx
from lra_bench.attention import available
from lra_bench.attention.skyformer import SkyformerAttention
from lra_bench.compose import compose_config
from lra_bench.train import run


def means(rows: list[approx.Row]) -> list[float]:
    return [r.rel_err_mean for r in sorted(rows, key=lambda r: r.features)]


def test_identity_trick_reproduces_the_explicit_matrices():
    q, k = approx.random_inputs(2, 2, 48, 8, 1.0, seed=3)[0]
    softmax = approx.build(
        "softmax", approx.EXACT_SETTINGS["softmax"], n=48, head_dim=8, num_heads=2
    )
    explicit = torch.softmax(q @ k.mT / math.sqrt(8), dim=-1)
    assert torch.equal(approx.attention_operator(softmax, q, k), explicit)
    sdpa = approx.build("softmax", {"impl": "sdpa", "dropout": 0.0}, n=48, head_dim=8, num_heads=2)
    torch.testing.assert_close(
        approx.attention_operator(sdpa, q, k), explicit, rtol=1e-12, atol=1e-14
    )
    kernel = approx.build("kernelized", {"dropout": 0.0}, n=48, head_dim=8, num_heads=2)
    gauss = torch.exp(-(torch.cdist(q, k) ** 2) / (2 * math.sqrt(8)))
    torch.testing.assert_close(
        approx.attention_operator(kernel, q, k), gauss, rtol=1e-10, atol=1e-14
    )


def test_spectral_norm_matches_svd():
    x = torch.randn(3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(approx.spectral_norm(x), torch.linalg.matrix_norm(x, ord=2))
    assert torch.equal(approx.relative_spectral_error(x, x), torch.zeros(3, dtype=torch.float64))


def test_only_registered_variants_with_a_knob_are_compared():
    names = approx.comparable()
    assert set(names) <= set(available()) and {"skyformer", "performer"} <= set(names)
    assert all(approx.KNOBS[name].exact in available() for name in names)


def test_skyformer_error_falls_as_landmarks_grow():
    inputs = approx.random_inputs(1, 2, 64, 16, 1.0, seed=0)
    errs = means(approx.measure(inputs, attns=["skyformer"], features=[8, 16, 32, 64], seeds=3))
    assert all(b <= a * 1.02 for a, b in zip(errs[:-1], errs[1:], strict=True)), errs
    assert errs[-1] < 0.5 * errs[0]


def test_skyformer_is_exact_with_all_rows_as_landmarks(monkeypatch):
    n = 64

    def every_row(self, lengths, n, heads):
        return torch.arange(2 * n).expand(lengths.shape[0], heads, -1)

    monkeypatch.setattr(SkyformerAttention, "draw_landmarks", every_row)
    inputs = approx.random_inputs(1, 2, n, 16, 1.0, seed=1)
    rows = approx.measure(
        inputs,
        attns=["skyformer"],
        features=[2 * n],
        seeds=1,
        settings={"skyformer": {"gamma": 1e-10, "pinv_iters": 40}},
    )
    assert rows[0].rel_err_mean < 1e-3


def test_performer_error_falls_with_features():
    inputs = approx.random_inputs(1, 2, 64, 16, 0.5, seed=0)
    errs = means(approx.measure(inputs, attns=["performer"], features=[8, 32, 128], seeds=4))
    assert errs[0] > errs[1] > errs[2], errs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_csv_table_and_plot(tmp_path, capsys):
    argv = [
        "--n",
        "32",
        "--dim",
        "8",
        "--heads",
        "1",
        "--batch",
        "1",
        "--features",
        "4,8",
        "--seeds",
        "2",
        "--scale",
        "0.5,1",
    ]
    assert (
        approx.main([*argv, "--attn", "skyformer,nystromformer", "--out-dir", str(tmp_path)]) == 0
    )
    rows = read_csv(tmp_path / "approx.csv")
    assert list(rows[0]) == approx.COLUMNS and len(rows) == 2 * 2 * 2
    sky = [r for r in rows if r["attn"] == "skyformer"]
    assert {r["exact"] for r in sky} == {"kernelized"} and {r["seed_count"] for r in sky} == {"2"}
    assert {r["seed_count"] for r in rows if r["attn"] == "nystromformer"} == {
        "1"
    }  # deterministic: one seed
    assert {r["source"] for r in rows} == {"random"} and {r["scale"] for r in rows} == {
        "0.5",
        "1.0",
    }
    assert "| skyformer | kernelized |" in capsys.readouterr().out
    assert (tmp_path / "approx.png").stat().st_size > 0 and (tmp_path / "approx.md").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--features", "8,x"],
        ["--features", "0"],
        ["--attn", "softmax"],
        ["--scale", "-1"],
        ["--n", "0"],
        ["--bogus"],
        ["--set", "skyformer"],
        ["--set", "nosuch.gamma=1"],
        ["--set", "skyformer.nosuch=1", "--n", "16", "--features", "4", "--attn", "skyformer"],
        ["--run-dir", "/nonexistent/run"],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, tmp_path, capsys):
    assert approx.main([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_checkpoint_inputs(smoke_overrides, tmp_path, capsys):
    run(compose_config(["attn=softmax", *smoke_overrides]))
    run_dir = tmp_path / "run"
    inputs = approx.capture_qk(run_dir, batch=3)
    assert len(inputs) == 3
    assert all(
        q.shape == k.shape
        and q.shape[:2] == (1, 2)
        and q.shape[3] == 32
        and q.dtype == torch.float64
        for q, k in inputs
    )
    out = tmp_path / "approx"
    argv = [
        "--run-dir",
        str(run_dir),
        "--batch",
        "2",
        "--features",
        "4,8",
        "--seeds",
        "2",
        "--out-dir",
        str(out),
        "--no-plot",
    ]
    assert approx.main(argv) == 0
    rows = read_csv(out / "approx.csv")
    assert rows and {r["source"] for r in rows} == {f"checkpoint:{run_dir}"}
    assert all(0.0 <= float(r["rel_err_mean"]) < 10 and float(r["scale"]) > 0 for r in rows)
    assert not (out / "approx.png").exists()
    assert approx.main([*argv, "--layer", "7"]) == 2
