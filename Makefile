PYTHON ?= python

.PHONY: install test test-all lint format demo preview

install:
	$(PYTHON) -m pip install -e ".[dev]"

# the fast loop while working: everything but the end-to-end checks marked slow, on every core
test:
	$(PYTHON) -m pytest -m "not slow" -n auto

# every test (what CI runs)
test-all:
	$(PYTHON) -m pytest -n auto

lint:
	$(PYTHON) -m ruff check src tests scripts
	$(PYTHON) -m ruff format --check src tests scripts examples

format:
	$(PYTHON) -m ruff format src tests scripts examples

demo:
	$(PYTHON) -m lra_bench task=listops attn=skyformer experiment=cpu_demo

preview:
	$(PYTHON) scripts/preview_pathfinder.py docs/pathfinder_preview.png
