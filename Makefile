# Makefile: the one place every workflow starts (README, CI jobs, tests). `make help` lists the targets.
# VENV may point at a shared virtualenv (CI jobs and whole-pipeline tests reuse one environment).

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-dev run test lint ingest validate featurize train evaluate bench-pipeline clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## create the virtualenv (.venv, or the VENV variable) and install the package

install-dev: $(VENV)/.installed-dev ## install the package with the test and lint tools

run: install ## run the whole pipeline on the embedded defaults (dvc repro)
	dvc repro
	@echo "metrics: reports/metrics.json   model: models/   MLflow store: mlflow.db"

ingest validate featurize train evaluate: install ## run one stage and its upstream stages (dvc repro <stage>)
	dvc repro $@

test: install-dev ## run the whole test suite (unit, data, model, e2e)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev ## static checks (ruff)
	$(BIN)/ruff check src tests benchmarks

bench-pipeline: install-dev ## benchmark: cold and no-op dvc repro, train loop vs bare torch loop
	$(BIN)/python benchmarks/pipeline/bench.py --out benchmarks/pipeline/results.json

clean: ## remove pipeline outputs and the local MLflow store (not the DVC cache or remote)
	rm -rf data/raw data/processed models reports mlflow.db mlartifacts logs
