# kspacelab developer commands. `make install` is idempotent: it only reinstalls when pyproject.toml changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kspacelab-installed
DEMO_OUT ?= demo_out

.PHONY: install demo demo-singlecoil test test-slow lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps fastmri==0.3.0
	touch $(STAMP)

demo: install
	$(BIN)/kspacelab demo --out $(DEMO_OUT)

demo-singlecoil: install
	$(BIN)/kspacelab demo --singlecoil --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -n 2 -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/speed_varnet.py --reps 7

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
