# Every target is listed by `make help`. Variables: PYTHON (the interpreter that creates .venv),
# PORT (serve), ARGS (extra pytest arguments for test).
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 3000
BIN    := $(VENV)/bin
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-one-core test-all lint format serve models examples accuracy clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# The stamp makes `make test` skip pip when nothing it depends on changed.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -c constraints.txt -e '.[train,serve,loadtest,bench,dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with the train, serve, loadtest, bench and dev extras (pinned by constraints.txt)

test: install ## Install, then run the default test suite (excludes tests marked slow)
	$(BIN)/pytest -m "not slow" $(ARGS)

test-one-core: install ## The server-starting tiers (e2e, integration) again, pinned to one core as CI runs them
	taskset -c 0 $(BIN)/pytest -m "not slow" tests/e2e tests/integration $(ARGS)

test-all: install ## Install, then run every test, slow ones included
	$(BIN)/pytest $(ARGS)

lint: ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

serve: install ## Serve the bundled models from exports/ on http://127.0.0.1:3000 (PORT=N to change)
	$(BIN)/python -m service --model-repo exports --port $(PORT)

models: install ## Retrain the bundled models (MNIST and 8x8 digits CNN and LSTM, text BiLSTM) and export them as new versions in exports/ (the CNNs with /explain's activation and filter outputs)
	$(BIN)/python -m training train --arch mnist-cnn --dataset mnist-5k --epochs 30 --threads 1 --out runs/mnist-cnn
	$(BIN)/python -m training export runs/mnist-cnn/checkpoint.pt --name mnist-cnn
	$(BIN)/python -m training train --arch row-lstm --dataset mnist-5k --epochs 60 --threads 1 --out runs/mnist-lstm
	$(BIN)/python -m training export runs/mnist-lstm/checkpoint.pt --name mnist-lstm
	$(BIN)/python -m training train --arch mnist-cnn --dataset digits --epochs 30 --out runs/digits-cnn
	$(BIN)/python -m training export runs/digits-cnn/checkpoint.pt --name digits-cnn
	$(BIN)/python -m training train --arch row-lstm --dataset digits --epochs 40 --out runs/digits-lstm
	$(BIN)/python -m training export runs/digits-lstm/checkpoint.pt --name digits-lstm
	$(BIN)/python -m training train --arch bilstm-text --dataset text-topics --epochs 10 --lr 1e-3 --batch-size 32 --max-length 32 --out runs/text-topics
	$(BIN)/python -m training export runs/text-topics/checkpoint.pt --name text-topics

examples: install ## Write examples/mnist (held-out MNIST digits as PNG, and a 7 on paper, scanned, on a canvas and photographed)
	$(BIN)/python -m training.variants --examples examples/mnist

accuracy: install ## Accuracy of the MNIST models on every kind of real upload (python -m bench.accuracy)
	$(BIN)/python -m bench.accuracy

clean: ## Remove caches and training runs (keeps .venv and exports/)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
