"""``python -m lra_bench.approx``: spectral error of approximate attentions vs the feature count.

    python -m lra_bench.approx                                   # random Q, K: n=512, d=32, scale 1
    python -m lra_bench.approx --scale 0.5,1,2 --features 16,32,64,128,256
    python -m lra_bench.approx --run-dir runs/listops/skyformer/seed0   # Q, K of a trained model
    python -m lra_bench.approx --set skyformer.gamma=1e-6 --set skyformer.pinv_iters=20

For each approximation with a feature knob (``KNOBS``, or a plugin's ``approx_knob``) and each
feature count m, the relative spectral-norm error ||A~ - A||_2 / ||A||_2 against its exact
counterpart (Skyformer against the exact Gaussian kernel ``kernelized``, the others against
softmax). A and A~ are the n x n operators out(Q, K, I_n) = A I_n: every variant is applied to V =
identity, so no variant has to expose its matrix. Errors are taken per (sequence, head) in float64
and averaged; sampling variants (and Linformer's random projections) are repeated over ``--seeds``
attention seeds, and ``rel_err_std`` is the spread of the per-seed means. Outputs: ``approx.csv``,
``approx.md`` and a log-log plot ``approx.png`` under ``--out-dir``; the Markdown table on stdout.
Exit status: 0 done, 1 failure while running (e.g. unreadable data), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lra_bench.attention import REGISTRY, Attention, SampledAttention, available, build_attention
from lra_bench.cli_style import hydra_style_alias
from lra_bench.errors import ApproxError, LraBenchError, error_status
from lra_bench.io import atomic_write_csv, atomic_write_text
from lra_bench.report.render import markdown_table

COLUMNS = [
    "attn",
    "exact",
    "features",
    "n",
    "scale",
    "source",
    "seed_count",
    "rel_err_mean",
    "rel_err_std",
]
DEFAULT_FEATURES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Knob:
    """How an approximation is compared: its exact
    counterpart, its feature field, fixed settings."""

    exact: str
    field: str
    settings: dict[str, Any] = field(default_factory=dict)


KNOBS: dict[str, Knob] = {
    "skyformer": Knob("kernelized", "num_landmarks"),
    "nystromformer": Knob(
        "softmax", "num_landmarks", {"conv_kernel": 0}
    ),  # no conv: the operator is pure attention
    "performer": Knob("softmax", "num_features"),
    "linformer": Knob("softmax", "proj_dim"),
}
EXACT_SETTINGS: dict[str, dict[str, Any]] = {
    "softmax": {"impl": "math", "dropout": 0.0},
    "kernelized": {"dropout": 0.0},
}
NOTES: dict[str, str] = {  # attention name ("" = always) -> note printed under the table
    "linformer": (
        "linformer: E, F are learned parameters; here they are the random initialisation "
        "(init_std), so its error is that of a random projection, not of a trained Linformer"
    ),
    "nystromformer": (
        "nystromformer: conv_kernel=0 (the depthwise conv on V is not part of the "
        "attention operator)"
    ),
    "": (
        "seed_count 1 = a deterministic variant; each approximation is measured against its own "
        "exact matrix (the Gaussian kernel is not row-normalised), so rows with different exact "
        "targets measure different problems"
    ),
}

Inputs = list[tuple[torch.Tensor, torch.Tensor]]  # (q, k) pairs, each [batch, heads, n, d]


@dataclass
class Row:
    attn: str
    exact: str
    features: int
    n: int
    scale: float | str
    source: str
    seed_count: int
    rel_err_mean: float
    rel_err_std: float


def knob_of(name: str) -> Knob | None:
    """The attention's knob: ours from ``KNOBS``; a plugin's from its class attribute
    ``approx_knob = ("<exact attention>", "<feature setting>")``."""
    if name in KNOBS:
        return KNOBS[name]
    declared = getattr(REGISTRY[name].module, "approx_knob", None) if name in REGISTRY else None
    return None if declared is None else Knob(*declared)


def comparable(names: Sequence[str] | None = None) -> list[str]:
    """Registered attentions with a known feature knob (all of them when ``names`` is None)."""
    registered = available()
    known = [
        name
        for name in registered
        if (knob := knob_of(name)) is not None and knob.exact in registered
    ]
    if names is None:
        return known
    bad = [name for name in names if name not in known]
    if bad:
        raise ApproxError(
            f"--attn: {bad[0]!r} has no known feature knob or is not registered; choose from "
            f"{', '.join(known)}"
        )
    return list(names)


def build(
    name: str, settings: dict[str, Any], *, n: int, head_dim: int, num_heads: int
) -> Attention:
    """The attention ``name`` with ``settings``, in eval mode and float64."""
    try:
        attn = build_attention(
            {"name": name, **settings}, head_dim=head_dim, num_heads=num_heads, max_len=n
        )
    except ValueError as err:
        raise ApproxError(f"{name}: {str(err).splitlines()[0]}") from None
    return attn.eval().double()


def attention_operator(attn: Attention, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The attention's n x n operator ``[batch, heads, n, n]``: its output for V = identity."""
    b, h, n, _ = q.shape
    eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(b, h, n, n)
    with torch.no_grad():
        return attn(q, k, eye, None)


def spectral_norm(x: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix of ``[..., n, n]`` (from the Gram matrix's top
    eigenvalue: exact, and about twice as fast as an SVD on the CPU)."""
    return torch.linalg.eigvalsh(x.mT @ x)[..., -1].clamp(min=0.0).sqrt()


def relative_spectral_error(
    approx: torch.Tensor, exact: torch.Tensor, exact_norm: torch.Tensor | None = None
) -> torch.Tensor:
    """||approx - exact||_2 / ||exact||_2 for each matrix of ``[..., n, n]``."""
    return spectral_norm(approx - exact) / (
        spectral_norm(exact) if exact_norm is None else exact_norm
    )


def random_inputs(batch: int, heads: int, n: int, dim: int, scale: float, seed: int) -> Inputs:
    """Standard normal Q, K times ``scale`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, dim, generator=g, dtype=torch.float64) * scale
    k = torch.randn(batch, heads, n, dim, generator=g, dtype=torch.float64) * scale
    return [(q, k)]


def is_random(attn: Attention) -> bool:
    """Whether a fresh seed changes the module: it
    samples, or holds randomly initialised parameters."""
    return isinstance(attn, SampledAttention) or any(True for _ in attn.parameters())


def errors_for(
    name: str,
    settings: dict[str, Any],
    inputs: Inputs,
    exact: list[tuple[torch.Tensor, torch.Tensor]],
    seed: int,
) -> torch.Tensor:
    """Errors of one configured approximation over every (sequence, head) of ``inputs``."""
    n_max = max(q.shape[2] for q, _ in inputs)
    _, h, _, d = inputs[0][0].shape
    knob = knob_of(name)
    assert knob is not None
    torch.manual_seed(seed)  # random initial parameters (Linformer's E, F) follow the seed too
    attn = build(
        name,
        {**settings, "seed": seed},
        n=max(n_max, settings.get(knob.field, 1)),
        head_dim=d,
        num_heads=h,
    )
    errs = [
        relative_spectral_error(attention_operator(attn, q, k), op, norm)
        for (q, k), (op, norm) in zip(inputs, exact, strict=True)
    ]
    return torch.cat([e.flatten() for e in errs])


def measure(
    inputs: Inputs,
    *,
    attns: Sequence[str] | None = None,
    features: Sequence[int] = DEFAULT_FEATURES,
    seeds: int = 3,
    settings: dict[str, dict[str, Any]] | None = None,
    scale: float | str = "",
    source: str = "random",
) -> list[Row]:
    """One row per (attention, feature count) on ``inputs``;
    ``settings`` overrides per attention name."""
    settings = settings or {}
    names = comparable(attns)
    _, h, _, d = inputs[0][0].shape
    n_max = max(q.shape[2] for q, _ in inputs)
    n_mean = round(sum(q.shape[2] for q, _ in inputs) / len(inputs))
    exact_ops: dict[
        str, list[tuple[torch.Tensor, torch.Tensor]]
    ] = {}  # per input: operator and its norm
    rows = []
    for name in names:
        knob = knob_of(name)
        assert knob is not None
        if knob.exact not in exact_ops:
            exact = build(
                knob.exact,
                {**EXACT_SETTINGS.get(knob.exact, {}), **settings.get(knob.exact, {})},
                n=n_max,
                head_dim=d,
                num_heads=h,
            )
            ops = [attention_operator(exact, q, k) for q, k in inputs]
            exact_ops[knob.exact] = [(op, spectral_norm(op)) for op in ops]
        for m in features:
            cfg = {**knob.settings, **settings.get(name, {}), knob.field: int(m)}
            probe = build(name, cfg, n=max(n_max, int(m)), head_dim=d, num_heads=h)
            seed_list = range(seeds) if is_random(probe) else range(1)
            per_seed = [
                errors_for(name, cfg, inputs, exact_ops[knob.exact], seed).mean().item()
                for seed in seed_list
            ]
            std = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
            rows.append(
                Row(
                    name,
                    knob.exact,
                    int(m),
                    n_mean,
                    scale,
                    source,
                    len(per_seed),
                    statistics.fmean(per_seed),
                    std,
                )
            )
    return rows


def capture_qk(run_dir: Path, batch: int, layer: int = 0, split: str = "val") -> Inputs:
    """Q, K entering layer ``layer``'s attention of the
    trained model in ``run_dir`` on ``batch`` examples.

    Each sequence is returned on its own, cut to its real tokens (float64, ``[1, heads, L, d]``).
    """
    from omegaconf import OmegaConf

    from lra_bench.data import load_splits
    from lra_bench.data.batches import Collator
    from lra_bench.model import MultiHeadAttention, build_model

    ckpt = run_dir / "best.pt"
    for path in (run_dir / "config.yaml", ckpt):
        if not path.is_file():
            raise ApproxError(
                f"--run-dir: {path} not found (a finished run folder holds config.yaml and best.pt)"
            )
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(cfg)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    model.eval()
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not 0 <= layer < len(layers):
        raise ApproxError(
            f"--layer: the model has attention layers 0..{len(layers) - 1}, got {layer}"
        )
    captured: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        q, k, _v, mask = args
        captured.append((q.detach(), k.detach(), mask))

    splits = load_splits(cfg)
    if split not in splits:
        raise ApproxError(f"--split: choose one of {', '.join(splits)}, got {split!r}")
    rows = splits[split][: min(batch, len(splits[split]))]
    collate = Collator(cfg.task.max_len, cfg.data.pad_to, cfg.data.mask_zero, cfg.task.dual)
    handle = layers[layer].attention.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(collate(rows))
    finally:
        handle.remove()
    inputs: Inputs = []
    for q, k, mask in captured:
        for i in range(q.shape[0]):
            keep = mask[i] if mask is not None else torch.ones(q.shape[2], dtype=torch.bool)
            if int(keep.sum()) >= 2:
                inputs.append((q[i : i + 1, :, keep].double(), k[i : i + 1, :, keep].double()))
    if not inputs:
        raise ApproxError(f"--run-dir: no sequence of two or more tokens in the {split} split")
    return inputs


def rms(inputs: Inputs) -> float:
    """Root mean square entry of the captured Q and K (the 'scale' reported for a checkpoint)."""
    total = sum(float((q * q).sum() + (k * k).sum()) for q, k in inputs)
    count = sum(q.numel() + k.numel() for q, k in inputs)
    return round(math.sqrt(total / count), 4)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = (
        {
            **asdict(row),
            "rel_err_mean": f"{row.rel_err_mean:.6g}",
            "rel_err_std": f"{row.rel_err_std:.6g}",
        }
        for row in rows
    )
    atomic_write_csv(path, COLUMNS, cells)


def markdown(rows: Sequence[Row]) -> str:
    """Rows = (attention, scale), columns = feature counts, cells = mean ± std."""
    feats = sorted({r.features for r in rows})
    keys = list(dict.fromkeys((r.attn, r.exact, r.scale) for r in rows))
    cells = {
        (r.attn, r.exact, r.scale, r.features): f"{r.rel_err_mean:.4f} ± {r.rel_err_std:.4f}"
        for r in rows
    }
    header = ["attn", "vs", "scale", *(f"m={m}" for m in feats)]
    body = [
        [attn, exact, str(scale), *(cells.get((attn, exact, scale, m), "–") for m in feats)]
        for attn, exact, scale in keys
    ]
    return markdown_table(header, body, label_columns=3, padded=False)


def plot(rows: Sequence[Row], path: Path, title: str) -> str | None:
    """Log-log error vs features, one line per (attention,
    scale); returns an error line if matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e . or pip install matplotlib)"
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    scales = {r.scale for r in rows}
    for attn, exact, scale in dict.fromkeys((r.attn, r.exact, r.scale) for r in rows):
        sel = sorted(
            (r for r in rows if (r.attn, r.exact, r.scale) == (attn, exact, scale)),
            key=lambda r: r.features,
        )
        label = f"{attn} vs {exact}" + (f" (scale {scale})" if len(scales) > 1 else "")
        means = [max(r.rel_err_mean, 1e-16) for r in sel]
        ax.errorbar(
            [r.features for r in sel],
            means,
            yerr=[r.rel_err_std for r in sel],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("features / landmarks / projection rank m")
    ax.set_ylabel("relative spectral error ||Ã − A||₂ / ||A||₂")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ApproxError(message)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ApproxError(f"{what}: give comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ApproxError(f"{what}: values must be > 0, got {text!r}")
    return values


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_settings(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` items -> {name: {key: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and name and key):
            raise ApproxError(
                f"--set: expected NAME.KEY=VALUE (e.g. skyformer.gamma=0.01), got {item!r}"
            )
        if name not in available():
            raise ApproxError(
                f"--set: unknown attention {name!r}; choose one of {', '.join(available())}"
            )
        out.setdefault(name, {})[key] = _value(value)
    return out


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m lra_bench.approx", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument(
        "--attn",
        help="comma-separated approximations (default: every registered one with a feature knob)",
    )
    p.add_argument(
        "--features",
        default=",".join(map(str, DEFAULT_FEATURES)),
        help="feature counts m (default %(default)s)",
    )
    _add_input_options(p)
    _add_output_options(p)
    return p


def _add_input_options(p: argparse.ArgumentParser) -> None:
    """Where Q, K come from: random draws (size, scale, seed) or a trained run's layer."""
    p.add_argument(
        "--n", type=int, default=512, help="sequence length of random inputs (default %(default)s)"
    )
    p.add_argument(
        "--dim", type=int, default=32, help="head dimension of random inputs (default %(default)s)"
    )
    p.add_argument(
        "--heads", type=int, default=2, help="heads of random inputs (default %(default)s)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=2,
        help="sequences: random batch size, or examples from --run-dir (default %(default)s)",
    )
    p.add_argument(
        "--scale",
        default="1",
        help="comma-separated scales of random Q, K ~ N(0, 1) * scale (default %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="attention seeds for sampling variants (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random Q, K (default %(default)s)"
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="a trained run folder (config.yaml, best.pt): use its Q, K on real batches",
    )
    p.add_argument(
        "--layer",
        type=int,
        default=0,
        help="--run-dir: attention layer to capture (default %(default)s)",
    )
    p.add_argument("--split", default="val", help="--run-dir: data split (default %(default)s)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """Attention settings, the output folder, threads and the plot switch."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="attention setting, repeatable",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("results/approx"),
        help="CSV, Markdown and plot folder (default %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; 0 = torch's default (default %(default)s: "
        "the n x n eigen-solves gain little from more, and lose much on a busy machine)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")


def run(args: argparse.Namespace) -> list[Row]:
    """Measure what ``args`` describes, write the outputs and print the table."""
    features = _ints(args.features, "--features")
    for key in ("n", "dim", "heads", "batch", "seeds"):
        if getattr(args, key) <= 0:
            raise ApproxError(f"--{key}: must be > 0, got {getattr(args, key)}")
    if args.threads < 0:
        raise ApproxError(f"--threads: must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    attns = comparable(
        [a.strip() for a in args.attn.split(",") if a.strip()] if args.attn else None
    )
    if not attns:
        raise ApproxError("no registered attention with a known feature knob")
    settings = parse_settings(args.set)
    common = {"attns": attns, "features": features, "seeds": args.seeds, "settings": settings}
    rows, title = (_on_run_dir if args.run_dir is not None else _on_random)(args, common)
    table = markdown(rows)
    notes = [note for name, note in NOTES.items() if name in attns or not name]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out_dir / "approx.csv")
    atomic_write_text(
        args.out_dir / "approx.md", table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    )
    print(
        f"relative spectral error ||A~ - A||_2 / ||A||_2, {title}; mean ± std over attention "
        "seeds\n"
    )
    print(table)
    for note in notes:
        print(f"note: {note}")
    print(f"\nwrote {args.out_dir / 'approx.csv'}")
    if not args.no_plot:
        problem = plot(rows, args.out_dir / "approx.png", title)
        print(
            problem or f"wrote {args.out_dir / 'approx.png'}",
            file=sys.stderr if problem else sys.stdout,
        )
    return rows


def _on_run_dir(args: argparse.Namespace, common: dict[str, Any]) -> tuple[list[Row], str]:
    """Rows and chart title for Q, K captured from the trained run in ``args.run_dir``."""
    inputs = capture_qk(args.run_dir, args.batch, args.layer, args.split)
    rows = measure(inputs, scale=rms(inputs), source=f"checkpoint:{args.run_dir}", **common)
    n_mean = round(sum(q.shape[2] for q, _ in inputs) / len(inputs))
    title = (
        f"{args.run_dir}, layer {args.layer}: {len(inputs)} {args.split} sequences "
        f"(mean length {n_mean}) x {inputs[0][0].shape[1]} heads"
    )
    return rows, title


def _on_random(args: argparse.Namespace, common: dict[str, Any]) -> tuple[list[Row], str]:
    """Rows and chart title for random Q, K at each of the ``--scale`` values."""
    try:
        scales = [float(s) for s in args.scale.split(",") if s.strip()]
    except ValueError:
        raise ApproxError(f"--scale: give comma-separated numbers, got {args.scale!r}") from None
    if not scales or min(scales) <= 0:
        raise ApproxError(f"--scale: values must be > 0, got {args.scale!r}")
    rows = []
    for scale in scales:
        inputs = random_inputs(args.batch, args.heads, args.n, args.dim, scale, args.seed)
        rows += measure(inputs, scale=scale, source="random", **common)
    title = (
        f"random Q, K ~ N(0, 1) x scale {args.scale}: n={args.n}, d={args.dim}, "
        f"{args.batch} sequences x {args.heads} heads"
    )
    return rows, title


def main(argv: Sequence[str] | None = None) -> int:
    try:
        top = parser()
        args = top.parse_args(hydra_style_alias(top, argv))
        run(args)
    except LraBenchError as err:  # bad arguments, or two plugins registering one attention name
        return error_status(err)
    except (RuntimeError, OSError) as err:  # data or checkpoint problems while running
        print(
            f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
