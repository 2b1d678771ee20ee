# landmark-ae: `make demo` runs the pipeline on the built-in data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first, pinned to the builds this machine holds on disk (fast and
# offline here); elsewhere pick yours, e.g. make install TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
DATA ?= synthetic
MODEL ?= m2
EPOCHS ?= 20

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install landmark-ae with its dev extras

demo: install ## generate the built-in dataset, prepare it, train $(MODEL) on it ($(EPOCHS) epochs)
	$(BIN)/landmark-ae prepare data=$(DATA)
	$(BIN)/landmark-ae train data=$(DATA) model=$(MODEL) epochs=$(EPOCHS)

test: install ## run the tests (slow ones excluded; see test-all)
	$(BIN)/python -m pytest

test-all: install ## run every test, slow ones included
	$(BIN)/python -m pytest -m ''

clean: ## remove runs in outputs/ and build debris (keeps .venv)
	rm -rf outputs/* build dist *.egg-info .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
