# AppealWatch — the two commands in the README are `make setup run` and `make setup test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run demo test lint bench clean

setup: $(STAMP)
	$(BIN)/appealwatch model build

# torch is installed first, pinned to the CPU build this machine keeps on disk (see README).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/appealwatch run $(if $(CONFIG),--config $(CONFIG))

demo: setup
	$(BIN)/appealwatch demo

lint:
	$(BIN)/ruff check bot handlers models tests bench
	$(BIN)/mypy bot handlers models tests
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
