# `make help` lists the targets. Every target sets up .venv first if needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
UV_VERSION := 0.13.9
# .python-version pins 3.12; pyenv's python3 honours it, python3.12 is the fallback.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help env bench-env run smoke test test-integration bench bench-accuracy exp-show lint params lock clean services services-down

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F ':.*?## ' '{printf "  make %-10s %s\n", $$1, $$2}'

env: $(STAMP) ## Create .venv (Python 3.12) with the pinned dependencies

$(STAMP): requirements.lock pyproject.toml .python-version
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 12) else f"Python 3.12 is needed (.python-version), found {v[0]}.{v[1]} at $(PYTHON)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

# The benchmark's peer (NumPyro on JAX): its own pinned group, on top of the project's.
bench-env: $(BENCH_STAMP) ## Add the benchmark's pinned group (NumPyro, JAX) to .venv

$(BENCH_STAMP): $(STAMP) requirements-bench.lock
	$(UV) pip install -q --python $(PY) -r requirements-bench.lock
	touch $@

run: env ## Run the whole pipeline (dvc repro): fetch, preprocess, fit, ppc, evaluate, plots
	$(PY) -m bnn.pipeline.params_file .
	dvc repro

smoke: env ## A first run in about a minute of fitting: every stage as `dvc exp run -S experiment=smoke`
	dvc exp run -S experiment=smoke

exp-show: env ## The DVC experiments, a screen wide: network, prior, steps and headline metrics
	dvc exp show --drop '.*' --keep 'Experiment|Created|^model.name$$|^prior.family$$|^inference.method$$|^inference.n_iter$$|^preset$$|^test_accuracy$$|^test_nll$$|^test_ece$$|^fit_seconds$$'

test: env ## Run the unit tests (tests/unit: tiny synthetic data, every stage's library code)
	$(PY) -m pytest -q -m "not integration"

test-integration: bench-env ## Run the integration tests (tests/integration: real DVC, sweeps, pyfunc, bench)
	$(PY) -m pytest -q -m integration

bench: bench-env ## Measure fit and predictive speed against PyMC's defaults and NumPyro (metrics/bench.*)
	$(PY) -m benchmarks.bench --out metrics

bench-accuracy: bench-env ## Time to 98% (dense) and 99% (conv) validation accuracy on MNIST, ours and NumPyro's
	dvc repro preprocess
	$(PY) -m benchmarks.time_to_accuracy dense --target 0.98 --out metrics/time_to_accuracy_dense.json
	$(PY) -m benchmarks.time_to_accuracy conv inference.n_iter=4000 --target 0.99 --out metrics/time_to_accuracy_conv.json

services: env ## Start the local stack on 127.0.0.1: PostgreSQL, S3 (moto), MLflow server, Ray head + worker
	$(PY) -m services.stack up --state .services --dvc-project .

services-down: ## Stop the local stack, leaving nothing running
	$(PY) -m services.stack down --state .services

lint: env ## Check style with ruff
	$(VENV)/bin/ruff check src tests benchmarks services
	$(VENV)/bin/ruff format --check src tests benchmarks services

params: env ## Regenerate params.yaml from conf/ (after editing conf/)
	$(PY) -m bnn.pipeline.params_file .

lock: env ## Re-pin requirements.lock from requirements.in
	$(UV) pip compile -q requirements.in -o requirements.lock --python-version 3.12
	$(UV) pip compile -q requirements-bench.in -c requirements.lock -o requirements-bench.lock --python-version 3.12

clean: ## Remove outputs that `make run` recreates (not the DVC cache, not mlflow.db)
	rm -rf outputs multirun
