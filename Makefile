# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml examples/*/pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
# What `run` needs (~380 MB), and on top of it the dev tools for the rest (~1.5 GB).
RUN_STAMP := $(VENV)/.run-installed-$(HASH)
STAMP     := $(VENV)/.installed-$(HASH)

.PHONY: run test lint fmt unit bench faults contract clean system-deps

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.run-installed-*
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(patsubst %,-e %,$(wildcard examples/*/))
	rm -f $(VENV)/.installed-*
	touch $@

run: $(RUN_STAMP)  ## start broker, ingress, worker and sinks on the embedded default
	$(BIN)/sms-replies run

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests examples benchmarks
	$(BIN)/ruff check --fix src tests examples benchmarks

# Servers and tools the integration tests start themselves (PostgreSQL is the machine's own).
SYSTEM_DEPS := clickhouse-server chromium caddy
system-deps:
	@missing=""; for cmd in $(SYSTEM_DEPS); do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

test: lint system-deps  ## lint, type check, then every test layer (starts its own broker)
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/agents

bench: $(STAMP)  ## every benchmark on the embedded broker; writes docs/benchmarks.md
	@# BENCH_ARGS="--only stores_scale --rows 1000000" for a part / shorter store loads
	@command -v wrk >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

faults: $(STAMP)  ## the full fault-injection suite (the short form runs in make test)
	$(BIN)/python -m tests.faults --callbacks 5000

contract: $(STAMP)  ## schemathesis, full runs, on the analytics API and the callback endpoint
	$(BIN)/python -m tests.contract

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
