# Two commands for a fresh machine: `make demo` (the demo site) and `make test` (everything CI checks).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AISDK_JS := tests/aisdk/node_modules/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test lint typecheck pytest docs dist clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

## The demo site on http://$(HOST):$(PORT)/ (SQLite, offline demo provider unless configured).
demo: $(VENV)/.demo-installed
	cd testproject && ../$(BIN)/python manage.py migrate --noinput
	cd testproject && ../$(BIN)/uvicorn testproject.asgi:application --host $(HOST) --port $(PORT)

## Benchmarks against bare relays (docs/performance.rst): ~10 min; BENCH_ARGS=--quick for ~2.
## PostgreSQL too when DATABASE_URL is set. Results: tests/benchmarks/results/*.json.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

## Lint, types, docs and the whole test suite with coverage.
test: lint typecheck pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed $(AISDK_JS)
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

# The Vercel AI SDK's client (the ai npm package, 5.0.0 and the newest 5.x), which
# tests/test_aisdk.py runs against ?format=ai-sdk; into the git-ignored tests/aisdk/node_modules.
# Without node or npm (or the registry) those tests are skipped, saying why.
$(AISDK_JS): tests/aisdk/package.json tests/aisdk/package-lock.json
	@if command -v npm >/dev/null 2>&1 && (cd tests/aisdk && npm ci --no-audit --no-fund --loglevel=error); \
	then touch $@; else echo "== the ai npm package could not be installed: its tests will be skipped"; fi

docs: $(VENV)/.dev-installed
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

dist: $(VENV)/.dev-installed
	rm -rf dist && $(BIN)/python -m build

clean:
	rm -rf $(VENV) dist build docs/_build .coverage .mypy_cache .ruff_cache .pytest_cache
