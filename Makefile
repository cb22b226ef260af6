# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml examples/*/pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: run test lint fmt unit integration faults bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(patsubst %,-e %,$(wildcard examples/*/))
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)  ## start broker, ingress, worker and sinks on the embedded default
	$(BIN)/sms-replies run

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests examples
	$(BIN)/ruff check --fix src tests examples

test: lint  ## lint, type check, then every test layer (starts its own broker)
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/faust

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
