"""One command-line style: the ``--option`` commands also take Hydra's ``key=value``.

The run, ``data`` and ``bench`` take ``key=value`` (Hydra); ``leaderboard``, ``approx`` and
``fidelity`` take ``--option value`` (argparse) and, as an alias, ``option=value`` for any of
their options (``format=latex`` is ``--format=latex``; ``fail_below=2`` is
``--fail-below=2``). A word whose part before ``=`` is not an option (a file or a run folder
such as ``runs/listops/softmax/seed0/trainer=smoke``) is left as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

ALIAS_NOTE = "Every option also takes Hydra's key=value style: format=csv is --format=csv."
KEY_VALUE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)=(.*)$", re.S)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--option`` of the parser and of its subcommands."""
    found = {s for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def hydra_style_alias(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> list[str]:
    """``argv`` (default: the command line) with ``option=value`` words as ``--option=value``;
    the parser's help gains a line saying so."""
    if ALIAS_NOTE not in (parser.epilog or ""):
        parser.epilog = f"{parser.epilog}\n{ALIAS_NOTE}" if parser.epilog else ALIAS_NOTE
    words = list(sys.argv[1:] if argv is None else argv)
    options = option_strings(parser)
    out = []
    for word in words:
        match = KEY_VALUE.match(word)
        flag = f"--{match.group(1).replace('_', '-')}" if match else ""
        out.append(f"{flag}={match.group(2)}" if match and flag in options else word)
    return out
