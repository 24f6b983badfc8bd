"""``python -m lra_bench.table plan|status|report experiment=<table> [overrides]``: a paper's
table as one grid.

``plan`` lists every run with its folder, state and estimated time and memory on this device;
``status`` says where each cell of the table stands; ``report`` prints the table beside the
paper's. The overrides are those of ``python -m lra_bench -m ...``: the same grid, narrowed the
same way (``task=listops``, ``attn=skyformer,softmax``, ``seed=0``).

Exit status: 0 done; 2 bad input (a config that does not compose, no leaderboard rows).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from lra_bench.errors import LraBenchError, closed_output_status, error_status
from lra_bench.report.render import FORMATS

EXAMPLES = """examples:
  python -m lra_bench.table plan experiment=skyformer_table1 task=listops
  python -m lra_bench -m experiment=cpu_table            # launch (re-run to resume)
  python -m lra_bench.table status experiment=cpu_table --watch 30
  python -m lra_bench.table report experiment=cpu_table --html out/
"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m lra_bench.table",
        description="A paper's table as one grid of runs: its plan, its state, its report "
        "(docs/tables.md).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="{plan,status,report}")
    plan = sub.add_parser("plan", help="every run: folder, state, estimated time and peak memory")
    status = sub.add_parser("status", help="one line per cell (task x attention): where it stands")
    report = sub.add_parser("report", help="the table beside the published one, and its efficiency")
    for p in (plan, status, report):
        p.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="as for python -m lra_bench -m"
        )
    plan.add_argument("--device", default="auto", help="where to measure (auto, cpu, cuda, cuda:N)")
    plan.add_argument("--budget", type=float, default=15.0, metavar="S",
                      help="seconds to measure one config: batches 1, 2, 4, ... while the next "
                      "fits, larger ones extrapolated (default 15)")  # fmt: skip
    plan.add_argument("--refresh", action="store_true", help="measure again, ignoring the cache")
    plan.add_argument(
        "--no-measure",
        action="store_true",
        help="measure nothing: states, and the estimates already cached",
    )
    status.add_argument("--watch", type=float, nargs="?", const=30.0, metavar="S",
                        help="refresh every S seconds (default 30) until interrupted")  # fmt: skip
    report.add_argument("--format", choices=FORMATS, default="markdown")
    report.add_argument(
        "--html",
        metavar="DIR",
        help="also write DIR/<table>.html (tables and chart, self-contained)",
    )
    report.add_argument("--published", metavar="SOURCE",
                        help="published rows to compare with (a source of "
                        "results/published/*.csv, or none); default: the table's "
                        "paper")  # fmt: skip
    return top


def run_plan(args: argparse.Namespace) -> int:
    from lra_bench.table.grid import expand
    from lra_bench.table.plan import make_plan, render_plan

    grid = expand(args.overrides)
    plan = make_plan(grid, args.device, args.budget, args.refresh, not args.no_measure)
    sys.stdout.write(render_plan(plan))
    return 0


def run_status(args: argparse.Namespace) -> int:
    from lra_bench.table.grid import expand
    from lra_bench.table.status import watch

    return watch(expand(args.overrides), args.watch)


def run_report(args: argparse.Namespace) -> int:
    from lra_bench.table.grid import expand
    from lra_bench.table.report import write_report

    return write_report(expand(args.overrides), args.format, args.html, args.published)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (errors are one line on stderr)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lra_bench.precheck import describe

    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)  # unwind (stops the worker), exit 143
    try:
        return {"plan": run_plan, "status": run_status, "report": run_report}[args.command](args)
    except (LraBenchError, HydraException, OmegaConfBaseException) as err:
        return error_status(describe(err))
    except BrokenPipeError:  # ``... | head``
        return closed_output_status()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
