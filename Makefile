# XRides: the two commands are `make run` and `make test`; everything else is a building block.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
UV_VERSION := 0.13.9
STACK := $(PY) -m deploy.stack
# Every tool, test and benchmark reads the stack's connection settings from this one file.
WITH_ENV := set -a; [ -f .stack/env ] && source .stack/env; set +a;

.PHONY: help install lint fmt typecheck test test-unit test-integration up down status run demo clean dashboards-preview bench bench-quick chaos cluster-up cluster-down chaos-cluster validate

help:
	@echo "make run     install, start the local stack and the platform, stream demo rides"
	@echo "make test    install, start the stack, run unit + integration tests and lint"
	@echo "make bench  the benchmark harness against the running stack (~30 min; BENCHMARKS.md)"
	@echo "make chaos  the fault suite: every part killed under load, nothing lost (~35 min)"
	@echo "make cluster-up | cluster-down   the production topology on this machine (docs/deployment.md)"
	@echo "make validate  kubeconform over deploy/k8s, docker-compose config over docker-compose.yml"
	@echo "make up | down | status | lint | fmt | test-unit | test-integration | dashboards-preview | bench-quick"

# The venv is rebuilt only when the lock file changes (the stamp records the last sync).
$(VENV)/.synced: requirements.lock pyproject.toml client/pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VPY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --quiet --python $(VPY) requirements.lock
	@touch $@

install: $(VENV)/.synced

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

up: install
	$(STACK) up

down:
	$(STACK) down

# The cluster profile (docs/deployment.md): 3 Kafka brokers, 3 Elasticsearch nodes, PostgreSQL with
# a streaming replica, a Flink session cluster (JobManager + 2 TaskManagers), 2 APIs behind HAProxy.
# Same stack directory and API port as `make up`: `make down` first when the single profile runs.
cluster-up: install
	XRIDES_PROFILE=cluster $(STACK) up

cluster-down:
	XRIDES_PROFILE=cluster $(STACK) down

status:
	$(STACK) status

# The deployment files through the real validators (deploy/validate): kubeconform -strict against
# Kubernetes' and the operators' schemas, and docker-compose config. The first run fetches and
# builds them into .stack/downloads/validate (a few minutes, mostly the compose build); then <1 s.
validate: install
	$(VPY) -m deploy.validate

test-unit: install validate
	$(VPY) -m pytest -q tests/unit

test-integration: up
	$(WITH_ENV) $(VPY) -m pytest -q -m integration tests/integration

test: install validate up
	$(WITH_ENV) $(VPY) -m pytest -q tests client/tests
	$(MAKE) --no-print-directory lint

run: up
	$(WITH_ENV) $(VPY) -m loadgen.demo

# The benchmark harness (benchmarks/harness): scenarios, the rate sweep, batch throughput and the
# parts' own limits, ~30 minutes; writes benchmarks/results/, BENCHMARKS.md and docs/img/bench-*.png.
bench: up
	$(WITH_ENV) $(VPY) -m benchmarks.harness

bench-quick: up
	$(WITH_ENV) $(VPY) -m benchmarks.harness --quick --results .stack/bench --markdown .stack/bench/BENCHMARKS.md --plots .stack/bench

# The fault suite (benchmarks/chaos): SIGKILL/restart of every part under load, ~35 minutes;
# writes benchmarks/results/chaos-latest.json and the table in docs/reliability.md.
chaos: up
	$(WITH_ENV) $(VPY) -m benchmarks.chaos

# PNGs of the Kibana charts in docs/img/ (docs/dashboards.md): the panels' own Elasticsearch
# requests over synthetic rides loaded under preview-* names, drawn with matplotlib.
dashboards-preview: up
	$(WITH_ENV) $(VPY) -m dashboards preview --out docs/img

clean: down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
