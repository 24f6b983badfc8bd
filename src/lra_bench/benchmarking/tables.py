"""Bench outputs: CSV rows with ratios to the baseline, Markdown tables and a log-log plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lra_bench.io import atomic_write_csv
from lra_bench.report.render import markdown_table

ATTENTION_COLUMNS = [
    "attn", "label", "n", "batch", "heads", "head_dim", "device", "dtype",
    "fwd_ms", "fwdbwd_ms", "peak_mem_mb", "saved_mb", "tensor_mem_mb", "own_saved_mb",
    "own_tensor_mb", "fwd_ratio", "fwdbwd_ratio", "mem_ratio", "saved_ratio", "tensor_mem_ratio",
    "own_saved_ratio", "own_tensor_ratio",
    "fwd_ratio_min", "fwd_ratio_max", "fwdbwd_ratio_min", "fwdbwd_ratio_max", "rounds", "spread_ok",
    "fwd_min_ms", "fwdbwd_min_ms", "fwd_mem_mb", "worker_rss_mb", "kernels",
    "repeats", "threads", "load_avg", "options", "status", "error",
]  # fmt: skip
TRAIN_STEP_COLUMNS = [
    "attn", "label", "task", "n", "batch", "device", "dtype", "attn_dropout",
    "step_ms", "steps_per_s", "tokens_per_s", "peak_mem_mb", "saved_mb", "tensor_mem_mb",
    "step_ratio", "mem_ratio", "tensor_mem_ratio", "step_ratio_min", "step_ratio_max", "rounds",
    "spread_ok", "step_min_ms", "worker_rss_mb", "kernels", "params", "repeats", "threads",
    "load_avg", "options", "status", "error",
]  # fmt: skip
DATA_COLUMNS = [
    "task", "split", "batch", "n", "workers", "bucket", "pad_to",
    "ms_per_batch", "mean_ms", "batches_per_s", "real_tokens_per_s", "padded_tokens_per_s",
    "real_fraction",
    "repeats", "threads", "load_avg", "run", "status", "error",
]  # fmt: skip
# ratio column -> measured column; a ratio is value / baseline's value at the same n
RATIOS = {
    "attention": {
        "fwd_ratio": "fwd_ms",
        "fwdbwd_ratio": "fwdbwd_ms",
        "mem_ratio": "peak_mem_mb",
        "saved_ratio": "saved_mb",
        "tensor_mem_ratio": "tensor_mem_mb",
        "own_saved_ratio": "own_saved_mb",
        "own_tensor_ratio": "own_tensor_mb",
    },
    "train_step": {
        "step_ratio": "step_ms",
        "mem_ratio": "peak_mem_mb",
        "tensor_mem_ratio": "tensor_mem_mb",
    },
}


TIME_SPREADS = {"fwd_ratio_min", "fwdbwd_ratio_min", "step_ratio_min"}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def add_ratios(rows: list[dict[str, Any]], baseline: str, mode: str) -> None:
    """Fill the ratio columns from the baseline row of the same n (blank when it has no figure);
    time ratios the interleaved rounds measured (``rounds`` set) are kept as they are."""
    base = {row["n"]: row for row in rows if row["label"] == baseline and row["status"] == "ok"}
    for row in rows:
        ref = base.get(row["n"])
        for ratio, column in RATIOS[mode].items():
            if row.get("rounds") and f"{ratio}_min" in TIME_SPREADS:
                continue
            value, ref_value = _num(row.get(column)), _num(ref.get(column)) if ref else math.nan
            ok = row["status"] == "ok" and ref_value > 0 and not math.isnan(value)
            row[ratio] = round(value / ref_value, 4) if ok else ""


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write the whole table at once (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(path, columns, ({c: _cell(row.get(c, "")) for c in columns} for row in rows))


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    return value


def fmt_ms(ms: Any) -> str:
    x = _num(ms)
    return (
        "–"
        if math.isnan(x)
        else f"{x:.0f} ms"
        if x >= 100
        else f"{x:.1f} ms"
        if x >= 10
        else f"{x:.2f} ms"
    )


def fmt_mb(mb: Any) -> str:
    x = _num(mb)
    return "– MB" if math.isnan(x) else f"{x:.0f} MB" if x >= 10 else f"{x:.1f} MB"


def fmt_ratio(r: Any) -> str:
    """Three significant digits below 1 (``0.0894×``: at long lengths the ratios that tell the
    variants apart are small), two decimals up to 10, whole numbers above."""
    x = _num(r)
    if math.isnan(x):
        return "–"
    return f"{x:.3g}×" if x < 1 else f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def fmt_spread(row: dict[str, Any], ratio: str) -> str:
    """``0.05×`` or, from interleaved rounds, ``0.05× [0.048–0.052]`` (min–max over rounds)."""
    text = fmt_ratio(row.get(ratio))
    low, high = row.get(f"{ratio}_min", ""), row.get(f"{ratio}_max", "")
    if row.get("rounds") and low != "" and high != "":
        return f"{text} [{_num(low):.3g}–{_num(high):.3g}]"
    return text


def notes(rows: Sequence[dict[str, Any]], baseline: str) -> list[str]:
    """Lines under a table: kernels detected, spreads, the worker's resident peak and the load."""
    ok = [row for row in rows if row.get("status") == "ok"]
    out = []
    for row in ok:
        kernels = str(row.get("kernels", "")).split()
        where = f"{row['label']} n={row['n']}"
        if "sdpa-math" in kernels:
            out.append(
                f"{where}: SDPA ran its math fallback (all b·h·n² weights at once), detected in "
                "the profiled run"
            )
        if "softmax-chunked" in kernels:
            out.append(f"{where}: softmax with dropout ran by blocks of query rows (a CPU)")
        spread_missed = row.get("spread_ok") is False or row.get("spread_ok") == "False"
        if spread_missed and row["label"] != baseline:
            out.append(
                f"{where}: the time budget ended before the ratio's spread was within ±5% "
                f"({row['rounds']} rounds)"
            )
    rounds = [int(_num(row["rounds"])) for row in ok if row.get("rounds")]
    if rounds:
        out.append(
            f"Time ratios: median over interleaved rounds (each variant once per round) "
            f"[min–max], {min(rounds)}–{max(rounds)} rounds; ratios to {baseline}"
        )
    rss = [(_num(row.get("worker_rss_mb")), row) for row in ok]
    rss = [(x, row) for x, row in rss if not math.isnan(x)]
    if rss:
        top, row = max(rss, key=lambda item: item[0])
        out.append(
            f"Worker resident peak (whole process, every phase of a case): up to "
            f"{fmt_mb(top)} ({row['label']} n={row['n']})"
        )
    loads = [_num(row.get("load_avg")) for row in rows]
    loads = [x for x in loads if not math.isnan(x)]
    if loads:
        out.append(f"Load average (1 min) during the run: {min(loads):.2f}–{max(loads):.2f}")
    return out


def _labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(row["label"] for row in rows))


def _failed(row: dict[str, Any]) -> str:
    return {"oom": "OOM", "timeout": "timeout", "skipped": "skipped", "invalid": "n/a"}.get(
        row["status"], row["status"]
    )


# the single-figure attention tables: title, measured column, its ratio column, formatter
SINGLE_TABLES = [
    ("Forward time, no grad (ratio to {baseline})", "fwd_ms", "fwd_ratio", fmt_ms),
    ("Saved for backward by one forward (ratio to {baseline})", "saved_mb", "saved_ratio", fmt_mb),
    (
        "The attention's own saved bytes: saved for backward without q, k, v and the output "
        "(ratio to {baseline})",
        "own_saved_mb", "own_saved_ratio", fmt_mb,
    ),
    (
        "Peak tensor memory of forward+backward: the most bytes of tensors alive at once, "
        "whatever the allocator caches (max_memory_allocated on a GPU; ratio to {baseline})",
        "tensor_mem_mb", "tensor_mem_ratio", fmt_mb,
    ),
    (
        "The attention's own peak tensor memory: the peak above without the output and the three "
        "input gradients every variant holds (ratio to {baseline})",
        "own_tensor_mb", "own_tensor_ratio", fmt_mb,
    ),
]  # fmt: skip


def attention_markdown(rows: Sequence[dict[str, Any]], baseline: str) -> str:
    """Tables with rows attentions and columns lengths: forward+backward time and peak memory, then
    forward time, bytes saved for backward and peak tensor memory."""
    if not rows:
        return "(no cases)"
    lengths = sorted({row["n"] for row in rows})
    by_key = {(row["label"], row["n"]): row for row in rows}
    first = rows[0]
    setup = (
        f"{first['device']}, {first['dtype']}, batch {first['batch']}, "
        f"{first['heads']} heads × {first['head_dim']}"
    )

    def both(row: dict[str, Any]) -> str:
        text = f"{fmt_ms(row['fwdbwd_ms'])} · {fmt_mb(row['peak_mem_mb'])}"
        if row["label"] == baseline or row["fwdbwd_ratio"] == "":
            return text
        return f"{text} ({fmt_spread(row, 'fwdbwd_ratio')} · {fmt_ratio(row['mem_ratio'])})"

    def single(column: str, ratio: str, fmt: Any) -> Any:
        def cell(row: dict[str, Any]) -> str:
            text = fmt(row.get(column))
            return (
                text
                if row["label"] == baseline or row.get(ratio, "") == ""
                else f"{text} ({fmt_spread(row, ratio)})"
            )

        return cell

    def table(cell: Any) -> str:
        body = []
        for label in _labels(rows):
            found = [by_key.get((label, n)) for n in lengths]
            body.append(
                [
                    label,
                    *(
                        "" if r is None else cell(r) if r["status"] == "ok" else _failed(r)
                        for r in found
                    ),
                ]
            )
        return markdown_table(["attention", *[str(n) for n in lengths]], body, padded=False)

    parts = [
        f"Forward+backward time · peak extra memory (ratios to {baseline}: time · memory); {setup}",
        "",
        table(both),
    ]
    for title, column, ratio, fmt in SINGLE_TABLES:
        parts += [
            "",
            f"{title.format(baseline=baseline)}; {setup}",
            "",
            table(single(column, ratio, fmt)),
        ]
    return "\n".join([*parts, "", *(f"- {line}" for line in notes(rows, baseline))]).rstrip()


def train_step_markdown(
    rows: Sequence[dict[str, Any]], baseline: str, dropout: float | None = None
) -> str:
    """One table: a row per attention with its attention dropout, step time, steps/s, memory
    (resident peak, saved for backward, peak tensor memory) and ratios to the baseline; under it
    which dropout the rows trained with, the kernels detected and the spreads."""
    if not rows:
        return "(no cases)"
    from lra_bench.benchmarking.trained import dropout_note

    first = rows[0]
    setup = (
        f"task {first['task']}, n {first['n']}, batch {first['batch']}, "
        f"{first['device']}, {first['dtype']}"
    )
    header = [
        "attention", "attn. dropout", "step", "steps/s", "peak memory", "saved for backward",
        "tensor memory", f"time vs {baseline}", f"memory vs {baseline}",
        f"tensor memory vs {baseline}",
    ]  # fmt: skip
    body = []
    for row in rows:
        if row["status"] != "ok":
            body.append([row["label"], _failed(row), *[""] * (len(header) - 2)])
            continue
        ratios = [
            fmt_ratio(row[key]) if row.get(key, "") != "" else "–"
            for key in ("mem_ratio", "tensor_mem_ratio")
        ]
        step_ratio = fmt_spread(row, "step_ratio") if row.get("step_ratio", "") != "" else "–"
        body.append(
            [
                row["label"],
                f"{_num(row.get('attn_dropout')):g}",
                fmt_ms(row["step_ms"]),
                f"{_num(row['steps_per_s']):.2f}",
                fmt_mb(row["peak_mem_mb"]),
                fmt_mb(row.get("saved_mb")),
                fmt_mb(row.get("tensor_mem_mb")),
                step_ratio,
                *ratios,
            ]
        )
    lines = [dropout_note(list(rows), dropout), *notes(rows, baseline)]
    return (
        f"Training step (forward, backward, AdamW); {setup}\n\n"
        + markdown_table(header, body, padded=False)
        + "\n\n"
        + "\n".join(f"- {line}" for line in lines)
    )


def data_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table: a row per timed loader with ms/batch, batches/s and real tokens/s."""
    header = [
        "task",
        "split",
        "batch",
        "n",
        "bucket",
        "workers",
        "ms/batch",
        "batches/s",
        "real tokens/s",
        "real / padded",
    ]
    body = [
        [
            row["task"], row["split"], str(row["batch"]), str(row["n"]),
            str(row["bucket"]).lower(), str(row["workers"]), fmt_ms(row["ms_per_batch"]),
            f"{_num(row['batches_per_s']):.1f}", f"{_num(row['real_tokens_per_s']):.3g}",
            f"{_num(row['real_fraction']):.2f}",
        ]
        for row in rows
    ]  # fmt: skip
    return "Data loader alone (no model), median over timed batches\n\n" + markdown_table(
        header, body, padded=False
    )


def plot_attention(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Forward+backward time and peak memory vs length, log-log; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors, markers = plt.get_cmap("tab20").colors, "osD^v<>ph*"
    for i, label in enumerate(_labels(rows)):
        ok = sorted(
            (r for r in rows if r["label"] == label and r["status"] == "ok"), key=lambda r: r["n"]
        )
        if not ok:
            continue
        ns = [r["n"] for r in ok]
        style = {
            "ls": "--" if label.startswith("softmax") else "-",
            "marker": markers[i % len(markers)],
            "color": colors[i % 20],
        }
        ax_t.plot(ns, [_num(r["fwdbwd_ms"]) for r in ok], label=label, **style)
        ax_m.plot(ns, [_num(r["peak_mem_mb"]) for r in ok], label=label, **style)
    for ax, title in ((ax_t, "forward+backward time (ms)"), (ax_m, "peak extra memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
