# Every target builds its own virtual environment, so each works on a fresh machine.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := build/demo

.PHONY: setup demo test test-all lint format bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,onnx,openvino,dali,ray,bench]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/psicbatch synth $(DEMO_DIR)/data --count 48 --size 128x128 --seed 7
	$(BIN)/psicbatch run $(DEMO_DIR)/data/images --out $(DEMO_DIR)/results.parquet

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# One test worker per core (at most 4), each pinned to its own cores (tests/conftest.py).
PARALLEL := -n auto --maxprocesses 4 --dist loadfile

test: lint
	$(BIN)/pytest $(PARALLEL)

test-all: lint
	$(BIN)/pytest $(PARALLEL) -m "slow or not slow"

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" benchmarks/cpu_paper_sizes.sh

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
