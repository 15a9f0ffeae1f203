# The same checks CI runs (.ci/run calls `make test`).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fast lint

# AUTOOPT_EXTRAS=gpu installs the CUDA builds of the ONNX runtimes (scripts/setup.sh); the stamp names the extras,
# so switching them reinstalls.
comma := ,
EXTRAS := $(or $(AUTOOPT_EXTRAS),cpu)
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	rm -f $(VENV)/.installed*
	AUTOOPT_EXTRAS=$(EXTRAS) bash scripts/setup.sh
	touch $@

run: setup  ## the main job on the built-in model; ARGS="key=value ..." adds Hydra overrides
	$(PY) -m autoopt target=cpu $(ARGS)

lint: setup
	$(PY) -m ruff check autoopt tests

test: setup lint  ## everything CI runs, slow end-to-end tests included
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"
