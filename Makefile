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
# LAUNCHER=joblib (or submitit_local, ...): the Hydra launcher of table1's train sweep. quality trains
# its rows one at a time (each row's runs feed the next step), so LAUNCHER does not apply to it.
LAUNCHER ?=

.DEFAULT_GOAL := help
.PHONY: help install browser demo table1 quality quality-unseen lint test test-all clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install landmark-ae with its dev extras

LA := $(BIN)/landmark-ae
# Each step's results go to the terminal (stderr copy) and its run_dir feeds the next step.
RUN_DIR = tee /dev/stderr | awk -F'\t' '$$1=="run_dir"{print $$2}'

demo: install ## on the built-in data (no network): prepare; train M2 (the seed) and M5 (experiment=retrieval); embed, evaluate and query one test image with each
	@set -e; \
	prep=$$($(LA) prepare data=$(DATA) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) | $(RUN_DIR)); \
	train=$$($(LA) train data=$(DATA) data_dir=$$prep model=$(MODEL) epochs=$(EPOCHS) | $(RUN_DIR)); \
	emb=$$($(LA) embed train_run=$$train | $(RUN_DIR)); \
	$(LA) evaluate embed_run=$$emb; \
	img=$$(ls $$prep/test/*.jpg | head -n 1); \
	echo "nearest train/val images of $$img:" >&2; \
	$(LA) query image=$$img embed_run=$$emb k=5 save_grid=true; \
	echo "== M5, the retrieval recipe (experiment=retrieval: contrastive training; its embed settings travel with the run) ==" >&2; \
	train5=$$($(LA) train data=$(DATA) data_dir=$$prep experiment=retrieval | $(RUN_DIR)); \
	emb5=$$($(LA) embed train_run=$$train5 | $(RUN_DIR)); \
	$(LA) evaluate embed_run=$$emb5; \
	echo "nearest train/val images of $$img (M5):" >&2; \
	$(LA) query image=$$img embed_run=$$emb5 k=5 save_grid=true

table1: install ## reproduce the seed's Table 1 (M1/M2/M3, 20 epochs) on DATA; real data: DATA=gldv2 DATA_ROOT=...; LAUNCHER=joblib trains them side by side
	$(BIN)/python scripts/table1.py data=$(DATA) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) epochs=$(EPOCHS) $(if $(LAUNCHER),launcher=$(LAUNCHER))

quality: install ## seed M1/M2/M3 vs M4 and the contrastive M5 (+objectives, post-processing) on DATA in one table, mean ± std over SEEDS
	$(BIN)/python scripts/quality.py data=$(DATA) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) epochs=$(EPOCHS) $(if $(SEEDS),seeds=$(SEEDS)) $(if $(REUSE),reuse=$(REUSE)) $(if $(THREADS),threads=$(THREADS))

quality-unseen: install ## M5 recipe vs M2 vs pixels, trained on landmark ids < SPLIT (5) of DATA (landmarks10), retrieving among the others
	$(BIN)/python scripts/quality.py protocol=unseen data=$(DATA) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(if $(SPLIT),split=$(SPLIT)) $(if $(SEEDS),seeds=$(SEEDS)) $(if $(REUSE),reuse=$(REUSE)) $(if $(THREADS),threads=$(THREADS))

lint: install ## ruff: pyflakes, pycodestyle, import order, bugbear (config in pyproject.toml)
	$(BIN)/ruff check landmark_ae scripts tests

# tests/test_page.py and test_report.py drive Debian's chromium (Playwright with its executable path): installed
# here where it is missing (CI runs as root on a fresh Debian machine). Without apt-get this fails loudly; the
# browser tests are never skipped.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: the browser tests need Debian's chromium at $(CHROMIUM), and there is no apt-get to install it: install chromium there" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	@test -x $(CHROMIUM) || { echo "make: apt-get installed chromium but $(CHROMIUM) is missing" >&2; exit 1; }

browser: $(CHROMIUM) ## install Debian's chromium for the browser tests (apt-get, where it is missing)

# The test files are shared out over WORKERS processes (pytest-xdist; a file's tests stay together, so
# its fixtures are built once per worker), in the order tests/conftest.py gives them (files that use
# the shared pipeline in turns with files that do not). WORKERS=0 runs them in this process.
WORKERS ?= 2
XDIST = $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile --no-loadscope-reorder)

test: install $(CHROMIUM) ## run the tests (slow ones excluded; see test-all), on WORKERS (2) processes
	$(BIN)/python -m pytest $(XDIST)

test-all: install $(CHROMIUM) ## run every test, slow ones included
	$(BIN)/python -m pytest -m '' $(XDIST)

clean: ## remove runs in outputs/ and build debris (keeps .venv)
	rm -rf outputs/* build dist *.egg-info .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
