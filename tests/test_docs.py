"""The documentation stays true: the protocol table matches the configs, links point at files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lra_bench.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]


def protocol_rows() -> dict[str, list[str]]:
    """Cells of docs/protocol.md's per-task table, by task name."""
    rows = {}
    for line in (ROOT / "docs" / "protocol.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("| `") else None
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_protocol_table_matches_the_task_config(task):
    cells = protocol_rows()[task]
    cfg = compose_config([f"task={task}"])
    documented = [
        int(cells[0].split()[0]),
        int(cells[1]),
        int(cells[2]),
        int(cells[3]),
        float(cells[4]),
        int(cells[5]),
        int(cells[6]),
    ]
    actual = [
        cfg.task.max_len,
        cfg.task.num_classes,
        cfg.task.vocab_size,
        cfg.trainer.batch_size,
        cfg.trainer.lr,
        cfg.trainer.warmup_steps,
        cfg.trainer.eval_every,
    ]
    assert documented == actual


@pytest.mark.parametrize(
    "page", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
)
def test_relative_links_point_at_files(page):
    text = (ROOT / page).read_text()
    targets = [t for t in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in t]
    assert targets or page != "README.md"
    for target in targets:
        assert (ROOT / page).parent.joinpath(target).exists(), f"{page} links to missing {target}"


def test_outputs_page_describes_every_leaderboard_column_in_order():
    from lra_bench.results import COLUMNS

    text = (ROOT / "docs" / "outputs.md").read_text()
    documented = [
        name
        for line in text.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`(\w+)`", line.split("|")[1])
    ]
    assert [c for c in documented if c in COLUMNS] == COLUMNS


def module_table() -> dict[str, str]:
    """docs/architecture.md's module table: the text of each row, by its first cell."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Packages and modules", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|", 1) for line in section.splitlines()]
    return {row[0].strip(): row[1] for row in rows if len(row) == 2 and row[0].strip()[:1] == "`"}


def test_module_table_names_every_module_of_the_package():
    """A top-level module is named in a row's first
    cell; a package's modules in the package's row."""
    src = ROOT / "src" / "lra_bench"
    rows = module_table()
    first_cells = " ".join(rows)
    missing = []
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).parts
        if len(parts) == 1:
            found = f"`{parts[0]}`" in first_cells
        else:
            row = next((text for cell, text in rows.items() if f"`{parts[0]}/`" in cell), "")
            found = parts[-1] == "__init__.py" or f"`{'/'.join(parts[1:])}`" in row
        if not found:
            missing.append("/".join(parts))
    assert missing == [], f"docs/architecture.md's module table misses {missing}"
