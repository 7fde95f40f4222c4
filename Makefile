# Everything runs from a virtual environment in .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint format docs bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[tests,docs,redis,bench]'
	touch $(STAMP)

# The example app, protected by the shield, on embedded defaults (SQLite store in
# example_app/instance, the bundled demo GeoIP database).
run: $(STAMP)
	$(BIN)/flask --app example_app.app run --port $${PORT:-5000}

# The stolen-token stories, played against the running example app (`make run` in another
# terminal; URL=http://127.0.0.1:8000 for another address).
demo: $(STAMP)
	$(BIN)/python -m example_app.attack_demo --url $${URL:-http://127.0.0.1:$${PORT:-5000}}

# The whole test suite (starts its own redis-server where one is installed).
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Layout is ruff format's (the version pinned in setup.cfg); CI checks it.
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache *.egg-info
