# The two commands of the README:
#   make up     install and run the whole stack on its embedded defaults
#   make test   install and run lint, types and the test suite
# and `make demo`: `make up` with the demo task types of config.demo.yaml (the CLI examples use them)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up demo test lint typecheck pytest pytest-serial fuzz chaos soak bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

up: $(VENV)/.installed
	$(BIN)/controlplane --config config.yaml up

demo: $(VENV)/.installed
	$(BIN)/controlplane --config config.demo.yaml up

# Style, formatting, and the dependency rule of docs/architecture.md (import-linter, pyproject.toml).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	$(BIN)/mypy controlplane workers bench

# The long fault loops (marked slow) run in `make chaos`, not here.  The suite runs as two
# pytest sessions side by side, kept apart (tests/shards.py); `make pytest-serial` runs one.
pytest: $(VENV)/.installed
	$(BIN)/python tests/shards.py -q -rs -m "not slow"

pytest-serial: $(VENV)/.installed
	$(BIN)/pytest -q -rs -m "not slow"

test: lint typecheck pytest

# Schemathesis against a real `controlplane serve`, many more examples per operation than `make test`.
FUZZ_EXAMPLES ?= 1000
fuzz: $(VENV)/.installed
	CP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -rs --timeout=3600 tests/test_fuzz.py tests/test_fuzz_scope.py

# The crash loops at length: `up`'s whole process group killed at random moments, 25 rounds
# (`make test` runs 2), then the tests marked slow (each part of `up` killed in turn, a full
# data dir, up's restart policy).  CP_CHAOS_SEED=<n> repeats a run's kill moments.
CHAOS_ITERATIONS ?= 25
chaos: $(VENV)/.installed
	CP_CHAOS_ITERATIONS=$(CHAOS_ITERATIONS) $(BIN)/pytest -q -rs --timeout=3600 tests/reliability/test_up_crash.py
	$(BIN)/pytest -q -rs --timeout=3600 -m slow

# `up` under a steady mixed load with random SIGKILLs of its parts (SOAK_MINUTES, default 30);
# writes bench/results/soak.json: tasks accepted, lost, stuck, time to final state, memory.
SOAK_MINUTES ?= 30
soak: $(VENV)/.installed
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES) --group-kills

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
