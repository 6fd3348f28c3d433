# The operational interface: README, CI and people all use these targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
RUN := .run

.PHONY: help venv node-sdk services up down demo test test-unit bench bench-delivery bench-reads lint clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $(VENV_STAMP)

venv: $(VENV_STAMP) ## create .venv with the package and dev tools

NODE_SDK := tests/node/node_modules/.package-lock.json
$(NODE_SDK): tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund

node-sdk: $(NODE_SDK) ## the official Signals Node SDK the tests drive

services: venv ## install (if missing) and start Kafka, Redis and the Kinesis emulator
	deploy/services.sh up

up: services ## services + one worker + delivery + the API in the background; writes .run/env
	deploy/stack.sh up

down: ## stop everything `make up` started
	-deploy/stack.sh down
	deploy/services.sh down

demo: venv ## the main job: stack up, demo topology, sample events, transitions at a webhook receiver
	$(MAKE) up
	$(PY) -m processor.demo

test: services node-sdk ## set up and run the whole suite against the real services
	set -a; source $(RUN)/services.env; set +a; $(PY) -m pytest -q

test-unit: venv ## the fast tests only (no services)
	$(PY) -m pytest -q tests/unit

bench: services ## throughput / latency benchmark through real Kafka and Redis
	set -a; source $(RUN)/services.env; set +a; $(PY) bench/bench_engine.py

bench-delivery: services ## webhook and Kinesis delivery: transitions/s, produce->webhook p50/p99
	set -a; source $(RUN)/services.env; set +a; $(PY) bench/bench_delivery.py

bench-reads: services ## Profiles Store reads over real HTTP (wrk and aiohttp): p50/p90/p99, server CPU per read
	deploy/services.sh install-bench-tools
	set -a; source $(RUN)/services.env; set +a; $(PY) bench/bench_reads.py --wrk 8 --client aiohttp --concurrency 1,2,4,8

lint: venv
	.venv/bin/ruff check processor tests

clean: down
	rm -rf $(RUN)
