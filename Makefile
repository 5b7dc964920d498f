# Two entry points: `make run` (the main job on the embedded default) and `make test` (the test suite).
# Both create .venv when missing and install the project into it. TORCH_SPEC picks the torch build: the default
# is the CPU wheel; GPU users override it, e.g. `make run TORCH_SPEC='torch==2.13.0' PIP_EXTRA='--index-url ...'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmaccel-installed

.PHONY: run test lint format bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e ".[eval,dev,video]" "$(TORCH_SPEC)"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mmaccel eval

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prefill.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
