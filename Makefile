# `make up` and `make test` work on a fresh machine with only Python 3.11+:
# they create .venv, install the project (again only when pyproject.toml changes), then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test audit lint bench chaos mutate mutate-report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/sqt up

test: audit
	$(BIN)/python -m pytest

# The same three checks run in tests/test_lint.py and in .pre-commit-config.yaml.
audit: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/grid.py
	$(BIN)/python bench/risk.py
	$(BIN)/python bench/reconciler.py

chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

# Mutation testing (tools/mutate.py): `make mutate`, or `make mutate MUTATE="lattice grid-core"`;
# at the lowest priority, one mutant at a time. `make mutate-report` prints the last scores.
MUTATE ?=
mutate: $(STAMP)
	nice -n 19 $(BIN)/python tools/mutate.py run $(MUTATE)

mutate-report: $(STAMP)
	$(BIN)/python tools/mutate.py report $(MUTATE)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis .mypy_cache .ruff_cache .mutmut
