# cm-fhir developer commands. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export CM_FHIR_TEST_PG_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: setup demo test docs lint typecheck imports unit soak bench bench-ingest clean fuzz-api lock

## Installs with constraints.txt, the versions the suite last passed with (`make lock` renews it).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## The main job on embedded defaults.
demo: $(STAMP)
	$(BIN)/cm-fhir demo --once

## Everything CI checks: lint, format, types, the import contract, the docs build, then the tests.
test: lint typecheck imports docs unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src

imports: $(STAMP)
	$(BIN)/lint-imports

## The user guide and API reference (mkdocs + mkdocstrings) into site/; warnings fail the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

## The in-memory FHIR R4 server the tests start; needs npm (tests skip it without node).
FHIR_SERVER := tests/fhir_server
.PHONY: fhir-server-deps
fhir-server-deps: $(FHIR_SERVER)/node_modules/.installed
$(FHIR_SERVER)/node_modules/.installed: $(FHIR_SERVER)/package-lock.json
	npm ci --prefix $(FHIR_SERVER) --no-audit --no-fund
	touch $@

## One pytest worker per core (pytest-xdist), a test file per worker at a time: tests use ephemeral
## ports and their own temp folders; each worker has its own PostgreSQL schema and test FHIR server.
## PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= auto
unit: $(STAMP) $(if $(shell command -v npm 2>/dev/null),fhir-server-deps)
	$(BIN)/pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile

## Long soak and fuzz runs, on demand (the kill soak prints its figures per database).
soak: $(STAMP)
	$(BIN)/pytest -q -m slow

## Schemathesis against the OpenAPI document of a real `cm-fhir serve`, no 5xx (takes minutes).
## The one definition is the slow test; CM_FHIR_FUZZ_EXAMPLES=n sets examples per operation.
fuzz-api: $(STAMP)
	$(BIN)/pytest -q -m slow tests/test_api_fuzz.py

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## Ingest only: 4 lockstep senders, 5 rounds (run it a few times: the figures swing with load).
bench-ingest: $(STAMP)
	$(BIN)/python bench/bench_ingest.py --senders 4 --rounds 5 --with-worker

## Resolve pyproject's ranges afresh in a scratch venv and record the result in constraints.txt.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Versions the test suite passed with; make and CI install with them (pip -c). Regenerate: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^cm-fhir'; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist
