"""``curves``: dev accuracy and training loss against steps, from runs' ``metrics.csv``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lra_bench.metrics_log import Curve, read_curve
from lra_bench.report import ReportError


def load_curves(run_dirs: Sequence[str | Path]) -> list[Curve]:
    """Each run folder's curves, labelled by the shortest distinct tail of its path."""
    curves = []
    for run_dir in run_dirs:
        try:
            curves.append(read_curve(Path(run_dir)))
        except ValueError as err:
            raise ReportError(str(err)) from None
    parts = [Path(c.name).resolve().parts for c in curves]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            break
    for curve, label in zip(curves, labels, strict=True):
        curve.name = label
    return curves


def draw_curves(curves: list[Curve], out: str | Path, title: str | None = None) -> Path:
    """Two panels (dev accuracy, training loss) against steps, one line per run."""
    from matplotlib.figure import Figure

    if not any(c.loss or c.val_acc for c in curves):
        raise ReportError("nothing to plot: the metrics files hold no rows yet")
    fig = Figure(figsize=(10, 4), dpi=150)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for curve in curves:
        if curve.val_acc:
            steps, values = zip(*curve.val_acc, strict=True)
            acc_ax.plot(steps, [100 * v for v in values], marker="o", ms=3, label=curve.name)
        if curve.loss:
            steps, values = zip(*curve.loss, strict=True)
            loss_ax.plot(steps, values, lw=1, label=curve.name)
    acc_ax.set(xlabel="step", ylabel="dev accuracy (%)", title="Dev accuracy")
    loss_ax.set(xlabel="step", ylabel="training loss (mean since last log)", title="Loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or err
        raise ReportError(f"{out}: cannot write the chart: {why}") from None
    return out
