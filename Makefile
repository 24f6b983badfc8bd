PYTHON ?= python

.PHONY: install test lint demo preview

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check src tests scripts

demo:
	$(PYTHON) -m lra_bench task=listops attn=skyformer experiment=cpu_demo

preview:
	$(PYTHON) scripts/preview_pathfinder.py docs/pathfinder_preview.png
