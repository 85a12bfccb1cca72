# rolestack: `make test` sets everything up (Debian packages, .venv) and runs every tier.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
PYTEST_ARGS ?= -q -rfEs --timeout=900 --durations=40

.PHONY: setup test test-unit test-functional test-integration test-e2e lint bench bench-lab bench-db bench-backup bench-dns bench-proxy security clean \
	lab lab-down lab-shell lab-salt lab-replace lab-status

setup:
	@tests/bootstrap.sh

test: setup lint
	$(PYTEST) $(PYTEST_ARGS) tests/unit tests/functional tests/integration tests/e2e

test-unit: setup
	$(PYTEST) $(PYTEST_ARGS) tests/unit

test-functional: setup
	$(PYTEST) $(PYTEST_ARGS) tests/functional

test-integration: setup
	$(PYTEST) $(PYTEST_ARGS) tests/integration

# the e2e tier brings up its own small lab (named e2e) and tears it down
test-e2e: setup
	$(PYTEST) $(PYTEST_ARGS) tests/e2e

# The lab: the platform of pillar.example/ in systemd-nspawn containers (see docs/lab.md)
LAB ?= lab
PROFILE ?= full
LAB_CMD = $(PY) lab/rolestack_lab.py --name $(LAB)

lab: setup
	$(LAB_CMD) up --profile $(PROFILE)

lab-down:
	$(LAB_CMD) down

lab-status:
	$(LAB_CMD) status

lab-shell:
	@test -n "$(HOST)" || { echo "usage: make lab-shell HOST=<host>"; exit 2; }
	$(LAB_CMD) shell $(HOST)

lab-salt:
	$(LAB_CMD) salt $(ARGS)

lab-replace:
	@test -n "$(HOST)" || { echo "usage: make lab-replace HOST=<host>"; exit 2; }
	$(LAB_CMD) replace $(HOST)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/yamllint -s -c .yamllint pillar.example
	find states -name "*.sls" -print0 | xargs -0 .venv/bin/salt-lint

bench: setup
	$(PY) bench/pillar_scale

bench-lab: setup
	$(PY) bench/lab

bench-db: setup
	$(PY) bench/mariadb

# the backup engine's pull of a 1 GB / 50k-file tree from a private rsync daemon, vs cp -a (docs/roles/backup.md)
bench-backup: setup
	$(PY) bench/backup

# zone generation and validation for 10, 1000, 10000 hosts (add --lab NAME for queries during reloads)
bench-dns: setup
	$(PY) bench/dns

# the proxy in the lab between app1 and sessions1 (its own small lab named benchproxy)
bench-proxy: setup
	$(PY) bench/twemproxy --lab benchproxy

# the hostile battery (docs/development.md): its own small lab named secbench
security: setup
	$(PY) bench/security

clean:
	rm -rf .tmp
