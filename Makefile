# Developer entry points. `make test` is what CI runs (see .ci/run).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint typecheck unit golden crds clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[ray,dev]'
	touch $(STAMP)

## install: create .venv with the operator, Ray's schema models and dev tools
install: $(STAMP)

## test: lint, type-check and run the test suite (the README's test command)
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not e2e"

## golden: regenerate golden files and the committed CRDs after a deliberate change
golden crds: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_golden.py tests/test_crd.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
