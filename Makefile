# The same checks CI runs (.ci/run calls `make test`).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fast lint measure

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

run: setup  ## the main job on the built-in model
	$(PY) -m autoopt target=cpu

lint: setup
	$(PY) -m ruff check autoopt tests

test: setup lint  ## everything CI runs, slow end-to-end tests included
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"
