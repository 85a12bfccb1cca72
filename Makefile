# rolestack: `make test` sets everything up (Debian packages, .venv) and runs every tier.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
PYTEST_ARGS ?= -q -rfEs --timeout=900

.PHONY: setup test test-unit test-functional test-integration test-e2e lint bench clean

setup:
	@tests/bootstrap.sh

test: setup lint
	$(PYTEST) $(PYTEST_ARGS) tests/unit tests/functional tests/integration

test-unit: setup
	$(PYTEST) $(PYTEST_ARGS) tests/unit

test-functional: setup
	$(PYTEST) $(PYTEST_ARGS) tests/functional

test-integration: setup
	$(PYTEST) $(PYTEST_ARGS) tests/integration

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/yamllint -s -c .yamllint pillar.example
	find states -name "*.sls" -print0 | xargs -0 .venv/bin/salt-lint

bench: setup
	$(PY) bench/pillar_scale

clean:
	rm -rf .tmp
