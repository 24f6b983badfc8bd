"""Code shape: every function fits on a screen, and lines stay within 100 columns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "tests", "scripts", "examples")
MAX_FUNCTION_LINES = 60  # from ``def`` to the last line, as ``ruff format`` lays it out
MAX_COLUMNS = 100  # [tool.ruff] line-length

# Functions allowed to stay longer than MAX_FUNCTION_LINES (none; an entry that is no longer long
# fails the test below, so the set cannot go stale).
STILL_LONG: set[str] = set()


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def function_lengths(tree: ast.AST, prefix: str = "") -> dict[str, int]:
    """``Class.method`` / ``outer.inner`` -> lines from ``def`` to the function's last line."""
    found = {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            found[name] = node.end_lineno - node.lineno + 1
            found.update(function_lengths(node, name + "."))
        elif isinstance(node, ast.ClassDef):
            found.update(function_lengths(node, prefix + node.name + "."))
        else:
            found.update(function_lengths(node, prefix))
    return found


def long_functions() -> dict[str, int]:
    long = {}
    for path in python_files():
        where = path.relative_to(ROOT).as_posix()
        for name, lines in function_lengths(ast.parse(path.read_text())).items():
            if lines > MAX_FUNCTION_LINES:
                long[f"{where}::{name}"] = lines
    return long


def test_the_length_measure_counts_from_def_to_last_line():
    source = (
        "class A:\n    def f(self):\n        x = 1\n\n        return x\n\n\ndef g():\n    pass\n"
    )
    assert function_lengths(ast.parse(source)) == {"A.f": 4, "g": 2}


def test_no_function_over_60_lines():
    found = long_functions()
    new = {name: lines for name, lines in found.items() if name not in STILL_LONG}
    assert not new, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): "
        + ", ".join(f"{name} ({lines})" for name, lines in sorted(new.items()))
    )
    done = sorted(STILL_LONG - set(found))
    assert not done, f"now within {MAX_FUNCTION_LINES} lines; remove from STILL_LONG: {done}"


def e501_exempt() -> list[str]:
    """Files listed in pyproject.toml as still allowed lines over 100 columns."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "E501" not in lint.get("ignore", []), "E501 is ignored for every file again"
    return sorted(p for p, rules in lint.get("per-file-ignores", {}).items() if "E501" in rules)


@pytest.mark.parametrize("path", e501_exempt())
def test_each_file_exempt_from_e501_still_needs_it(path):
    file = ROOT / path
    assert file.exists(), f"{path} is gone; drop its entry from [tool.ruff.lint.per-file-ignores]"
    widest = max(len(line) for line in file.read_text().splitlines())
    assert widest > MAX_COLUMNS, (
        f"{path} has no line over {MAX_COLUMNS} columns now; drop its entry from "
        "[tool.ruff.lint.per-file-ignores] in pyproject.toml"
    )
