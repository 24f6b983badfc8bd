"""``python -m lra_bench.leaderboard show|compare|plot|curves``: reports from leaderboard CSVs.

Exit status: 0 done; 1 ``compare --fail-below`` found a larger accuracy drop;
2 bad input (unreadable or malformed CSV, nothing left after filtering, missing matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lra_bench.cli_style import hydra_style_alias
from lra_bench.errors import closed_output_status, error_status
from lra_bench.io import atomic_write_text
from lra_bench.report import ReportError
from lra_bench.report.load import Record, load_all, load_csv
from lra_bench.report.render import FORMATS, render
from lra_bench.run_kind import SMOKE

EXAMPLES = """examples:
  python -m lra_bench.leaderboard show results/leaderboard.csv skyformer_paper
  python -m lra_bench.leaderboard show results/leaderboard.csv --task listops,text --format latex
  python -m lra_bench.leaderboard compare skyformer_paper results/leaderboard.csv --fail-below 2
  python -m lra_bench.leaderboard plot skyformer_paper -o chart.png
  python -m lra_bench.leaderboard curves runs/listops/skyformer/seed0/experiment=cpu_demo \
      -o curves.png
"""


PROTOCOLS = """Accuracy and efficiency tables per (source, device, precision, parity, protocol).

Two labels say what a row can be compared with. protocol is the training recipe (model size,
steps, batch, learning rate): skyformer_paper (the Skyformer paper's shared setup) or lra_paper
(the LRA paper's per-task setups). parity says whose code the attention reproduces: none (the
papers' mathematics, this harness's default), skyformer_code (pkuzengqi/Skyformer, quirks
included) or lra_code (google-research/long-range-arena). Published rows carry the values of
the code behind them; compare warns when the two sides differ. See docs/fidelity.md.
"""


TABLE_HELP = "a leaderboard CSV, or a published table by name (skyformer_paper, lra_paper)"


def names(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (filters take commas or repetition)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_filters(p: argparse.ArgumentParser, devices: bool = True) -> None:
    p.add_argument(
        "--smoke",
        action="store_true",
        help=(
            "include smoke rows (kind=smoke: wiring checks such as trainer=smoke), hidden by "
            "default"
        ),
    )
    p.add_argument(
        "--task", type=names, action="extend", help="only these tasks (comma-separated or repeated)"
    )
    p.add_argument("--attn", type=names, action="extend", help="only these attentions")
    if devices:
        p.add_argument(
            "--device",
            type=names,
            action="extend",
            help="only devices containing this text (case-insensitive)",
        )
        p.add_argument(
            "--precision",
            type=names,
            action="extend",
            help="only these precisions (fp32, bf16-amp, …)",
        )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m lra_bench.leaderboard",
        description=(
            "Tables, comparisons and charts from leaderboard CSVs (results/leaderboard.csv) and "
            "the papers' published tables, by short name (skyformer_paper, lra_paper) or path."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="{show,compare,plot,curves}")
    for add in (_add_show, _add_compare, _add_plot, _add_curves):
        add(sub)
    return top


def _add_show(sub: argparse._SubParsersAction) -> None:
    """``show``: the tables of one or more leaderboards."""
    show = sub.add_parser(
        "show",
        help="accuracy and efficiency tables per (source, device, precision, parity, protocol)",
        description=PROTOCOLS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("files", nargs="+", metavar="FILE", help=TABLE_HELP)
    show.add_argument(
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown tables (default), latex tables, or csv/json records with full numbers",
    )
    show.add_argument("-o", "--output", help="write here instead of stdout")
    add_filters(show)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    """``compare``: NEW against BASE, with per-side row filters."""
    cmp = sub.add_parser(
        "compare", help="accuracy deltas and time/memory ratios of NEW against BASE"
    )
    cmp.add_argument("base", metavar="BASE", help=TABLE_HELP)
    cmp.add_argument("new", metavar="NEW", help=TABLE_HELP)
    cmp.add_argument(
        "--fail-below",
        type=float,
        metavar="X",
        help="exit 1 when any accuracy delta is below -X points",
    )
    cmp.add_argument("--format", choices=FORMATS, default="markdown")
    cmp.add_argument("-o", "--output", help="write here instead of stdout")
    add_filters(cmp, devices=False)
    for side in ("base", "new"):
        cmp.add_argument(
            f"--{side}-device",
            type=names,
            action="extend",
            help=f"only {side} rows on devices containing this text",
        )
        cmp.add_argument(
            f"--{side}-precision",
            type=names,
            action="extend",
            help=f"only {side} rows of these precisions",
        )
        cmp.add_argument(
            f"--{side}-source",
            type=names,
            action="extend",
            help=f"only {side} rows of these sources",
        )


def _add_plot(sub: argparse._SubParsersAction) -> None:
    """``plot``: the LRA-style speed / accuracy / memory chart."""
    plot = sub.add_parser(
        "plot", help="LRA-style chart: speed vs average accuracy, marker area = peak memory"
    )
    plot.add_argument("files", nargs="+", metavar="FILE", help=TABLE_HELP)
    plot.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg)")
    plot.add_argument(
        "--acc-source",
        help="take accuracies from rows of this source (when several could pair with the times)",
    )
    plot.add_argument("--title")
    add_filters(plot)


def _add_curves(sub: argparse._SubParsersAction) -> None:
    """``curves``: learning curves from runs' metrics.csv."""
    curves = sub.add_parser(
        "curves", help="dev accuracy and training loss against steps, from runs' metrics.csv"
    )
    curves.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    curves.add_argument(
        "-o", "--output", default="curves.png", help="image file (default: curves.png)"
    )
    curves.add_argument("--title")


def keep(
    records: list[Record], task=None, attn=None, device=None, precision=None, source=None
) -> list[Record]:
    """Rows passing every given filter (device: case-insensitive substring; others: exact)."""

    def ok(r: Record) -> bool:
        return (
            (not task or r.task in task)
            and (not attn or r.attn in attn)
            and (not device or any(d.lower() in r.device.lower() for d in device))
            and (not precision or r.precision in precision)
            and (not source or r.source in source)
        )

    return [r for r in records if ok(r)]


def selected_rows(args: argparse.Namespace) -> list[Record]:
    """The rows of ``args.files`` that ``show`` and
    ``plot`` use: filtered, smoke rows on request."""
    return filtered(
        load_all(args.files),
        ", ".join(args.files),
        args.smoke,
        task=args.task,
        attn=args.attn,
        device=args.device,
        precision=args.precision,
    )


def filtered(
    records: list[Record], what: str, smoke: bool = False, **filters: list[str] | None
) -> list[Record]:
    """Rows passing the filters; smoke rows only with ``smoke``. None left is a ReportError."""
    passed = keep(records, **filters)
    rows = [r for r in passed if smoke or r.kind != SMOKE]
    if not rows:
        used = ", ".join(f"--{k.replace('_', '-')} {','.join(v)}" for k, v in filters.items() if v)
        problem = f"no rows left after {used}" if used else "no rows"
        if passed:
            problem += f" ({len(passed)} smoke row(s) hidden; add --smoke to include them)"
        raise ReportError(f"{what}: {problem}")
    return rows


def emit(text: str, output: str | None) -> None:
    if output:
        try:
            atomic_write_text(Path(output), text)
        except OSError as err:
            raise ReportError(f"{output}: cannot write: {err.strerror}") from None
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def run_show(args: argparse.Namespace) -> int:
    from lra_bench.report.show import show_tables

    rows = selected_rows(args)
    emit(render(show_tables(rows, args.task), args.format), args.output)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from lra_bench.report.compare import Side, compare

    sides = []
    for option, path in (("base", args.base), ("new", args.new)):
        rows = filtered(
            load_csv(path),
            path,
            args.smoke,
            task=args.task,
            attn=args.attn,
            device=getattr(args, f"{option}_device"),
            precision=getattr(args, f"{option}_precision"),
            source=getattr(args, f"{option}_source"),
        )
        sides.append(Side(path, option, rows))
    result = compare(*sides)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    emit(render([result.table], args.format), args.output)
    if args.fail_below is not None:
        drops = [(t, a, d) for t, a, d in result.deltas if d < -args.fail_below]
        if drops:
            listed = ", ".join(f"{t}/{a} {d:+.2f}" for t, a, d in drops)
            print(
                f"accuracy dropped by more than {args.fail_below:g} points: {listed}",
                file=sys.stderr,
            )
            return 1
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from lra_bench.report.plot import draw, plot_data

    rows = selected_rows(args)
    data = plot_data(rows, args.acc_source)
    out = draw(data, args.output, args.title)
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from lra_bench.report.curves import draw_curves, load_curves

    print(f"wrote {draw_curves(load_curves(args.run_dirs), args.output, args.title)}")
    return 0


COMMANDS = {"show": run_show, "compare": run_compare, "plot": run_plot, "curves": run_curves}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (errors are one line on stderr)."""
    top = parser()
    args = top.parse_args(hydra_style_alias(top, argv))
    try:
        return COMMANDS[args.command](args)
    except ReportError as err:
        return error_status(err)
    except BrokenPipeError:  # ``... | head``
        return closed_output_status()


if __name__ == "__main__":
    sys.exit(main())
