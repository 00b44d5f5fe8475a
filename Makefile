# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint format bench clean

# torch first, pinned to the CPU build served here (any other spec pulls CUDA packages);
# then the project with every launcher, Optuna and MLflow in ONE pip call (installed one by
# one, the Ray launcher downgrades cloudpickle below what joblib needs).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,launchers,tracking]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## the main job: a small default ablation study, a few minutes on 2 cores
	$(BIN)/rnn-lab study demo

test: $(STAMP)  ## the suite CI runs: lint, then everything but tests marked slow
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow" -q --durations=25

test-all: $(STAMP)  ## including slow tests (the Ray launcher)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)  ## speed: rnn_lab against a walkthrough-style loop and torch autograd
	$(BIN)/rnn-lab bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
