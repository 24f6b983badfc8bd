PYTHON ?= python

.PHONY: install test test-fast lint format demo preview

install:
	$(PYTHON) -m pip install -e ".[dev]"

# every test, on every core (the README's set-up command; what CI runs)
test:
	$(PYTHON) -m pytest -n auto

# the quick loop while working: everything but the end-to-end checks marked slow; worksteal
# keeps both cores busy when a few tests take much longer than the rest
test-fast:
	$(PYTHON) -m pytest -m "not slow" -n auto --dist worksteal

lint:
	$(PYTHON) -m ruff check src tests scripts examples
	$(PYTHON) -m ruff format --check src tests scripts examples

format:
	$(PYTHON) -m ruff format src tests scripts examples

demo:
	$(PYTHON) -m lra_bench task=listops attn=skyformer experiment=cpu_demo

preview:
	$(PYTHON) scripts/preview_pathfinder.py docs/pathfinder_preview.png
