# Siyu — everything a fresh machine needs is done by these targets.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
# uv from PATH when installed; otherwise through the Python that installed it (`python3 -m uv`).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := $(UV) run --frozen python
# Python writes and reuses bytecode (.pyc) here even where the environment says not to (some CI
# images set PYTHONDONTWRITEBYTECODE=1): without it every process — each test worker, each process
# of the e2e stack and of make run — compiles every module it imports from source again, seconds of
# CPU per process start. The dependencies are compiled once by `uv sync --compile-bytecode`.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup run test test-unit test-integration test-e2e lint contracts bench check clean

help:
	@echo "make run        set up and run the four services, the relay and the WeChat sandbox (Ctrl-C stops all)"
	@echo "                REPLICAS=2 adds a second process of each service on port + 10"
	@echo "make test       run every test against the real PostgreSQL and RabbitMQ"
	@echo "make lint       ruff and mypy"
	@echo "make contracts  export every event's JSON Schema to contracts/"
	@echo "make bench      run the benchmarks; results go to bench/results/"

setup:
	@command -v python3 >/dev/null || { echo "siyu: python3 (3.11) is required: install it first"; exit 1; }
	@$(UV) --version >/dev/null 2>&1 || { echo "siyu: installing uv"; python3 -m pip install --quiet uv; }
	@$(UV) sync --frozen --quiet --compile-bytecode

check: setup
	@$(PY) -m tools.siyuctl check

REPLICAS ?= 1

run: setup
	@REPLICAS=$(REPLICAS) $(PY) -m tools.run

# pytest-xdist workers for `make test`. Measured on this 2-core machine (e2e + integration, shared
# with other work): 2 workers 297 s, 3 workers 201 s, 4 workers 247 s. Tests wait on PostgreSQL,
# RabbitMQ and the stack's processes, so one more worker than cores pays; two more only add CPU.
TEST_WORKERS ?= 3

test: setup check
	@$(PY) -m pytest -q -n $(TEST_WORKERS)

test-unit: setup
	@$(PY) -m pytest -q tests/unit

test-integration: setup check
	@$(PY) -m pytest -q -n $(TEST_WORKERS) tests/integration

test-e2e: setup check
	@$(PY) -m pytest -q tests/e2e

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy shared

contracts: setup
	@$(PY) -m tools.contracts

bench: setup check
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "siyu: installing wrk, the HTTP benchmarks' load generator (apt-get install -y wrk)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 \
	      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } \
	      || { echo "siyu: could not install wrk with apt-get; install it and run make bench again"; exit 1; }; \
	  else \
	    echo "siyu: the HTTP benchmarks need wrk: install it (sudo apt-get install -y wrk, brew install wrk) and run make bench again"; \
	    exit 1; \
	  fi; }
	@$(PY) -m bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
