# Developer tasks. `make dev` once, then `make lint test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev lint test bench demo ci

dev:
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[dev]'

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/lint-workflows

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python benchmarks/bench_validate.py
	$(BIN)/python benchmarks/bench_sandbox_startup.py
	$(BIN)/python benchmarks/bench_submit.py
	$(BIN)/python benchmarks/bench_eval.py

demo:
	$(BIN)/vertex-tuner submit jobs/support_tone.yaml --sandbox

ci:
	bash .ci/run
