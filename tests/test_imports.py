"""The package's import graph has no cycle, counting imports inside functions too."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names() -> dict[str, Path]:
    names = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        names[name] = path
    return names


def imported(tree: ast.AST, known: dict[str, Path]) -> set[str]:
    """The package modules a file imports anywhere
    (``from a.b import c`` counts a.b.c if it is a module, else a.b)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in candidates:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_cycles():
    known = module_names()
    assert "lra_bench.config" in known and "lra_bench.attention.registry" in known
    graph = {
        name: imported(ast.parse(path.read_text()), known) - {name} for name, path in known.items()
    }
    assert "lra_bench.attention" in graph["lra_bench.config"]  # the graph sees real edges
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None
