"""What the harness knows about each task's data, in one place: its module, sources and sizes.

Adding a task is its data module (``lra_bench.data.<task>``), an entry here and its configs
(``conf/task/<task>.yaml``). This module imports nothing from the package, so ``config.py``
can read it to validate settings without loading the data code.
"""

from __future__ import annotations

# The module that prepares each task's splits (see the contract in ``lra_bench.data``).
TASK_MODULES = {
    "listops": "lra_bench.data.listops",
    "text": "lra_bench.data.text",
    "retrieval": "lra_bench.data.retrieval",
    "image": "lra_bench.data.image",
    "pathfinder": "lra_bench.data.pathfinder",
    "pathx": "lra_bench.data.pathfinder",
}

# The data sources each task reads (``data.source``); ``auto`` picks the first one found.
TASK_SOURCES = {
    "listops": ("auto", "release", "generate"),
    "text": ("auto", "local", "hub"),
    "retrieval": ("auto", "local", "release"),
    "image": ("auto", "local", "hub"),
    "pathfinder": ("auto", "release", "generate"),
    "pathx": ("auto", "release", "generate"),
}

# Pathfinder tasks: side x side pixel tokens.
IMAGE_SIDES = {"pathfinder": 32, "pathx": 128}

# The ListOps generator's default min_length < length < max_length (LRA's).
LISTOPS_LENGTHS = (500, 2000)
