# Tether: `make up` serves everything locally; `make test` runs lint, types and the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := $(VENV)/.dev
NOVNC := shared/tether/relay/static/novnc/core/rfb.js
REDOC := shared/tether/surfaces/static/redoc.standalone.js
# checkov in a venv of its own: its pinned dependencies clash with the project's.
CHECKOV := .venv-checkov/bin/checkov

.PHONY: install dev up test lint typecheck bench fuzz soak clean

# What serving needs (`make up`) ...
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $(STAMP)

# ... and what the tests, linters and benchmarks add.
$(DEV): $(STAMP) requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(DEV)

# noVNC from the npm registry, pinned by infra/novnc/package-lock.json, served by the relay.
$(NOVNC): infra/novnc/package.json infra/novnc/package-lock.json
	npm ci --prefix infra/novnc --no-audit --no-fund --silent
	rm -rf shared/tether/relay/static/novnc
	mkdir -p shared/tether/relay/static/novnc
	cp -r infra/novnc/node_modules/@novnc/novnc/core infra/novnc/node_modules/@novnc/novnc/vendor \
	    infra/novnc/node_modules/@novnc/novnc/LICENSE.txt shared/tether/relay/static/novnc/
	touch $(NOVNC)

# Redoc from the npm registry, pinned by infra/redoc/package-lock.json: the reference pages.
$(REDOC): infra/redoc/package.json infra/redoc/package-lock.json
	npm ci --prefix infra/redoc --no-audit --no-fund --silent
	mkdir -p shared/tether/surfaces/static
	cp infra/redoc/node_modules/redoc/bundles/redoc.standalone.js \
	    infra/redoc/node_modules/redoc/LICENSE shared/tether/surfaces/static/
	touch $(REDOC)

$(CHECKOV): infra/checkov-requirements.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q -r infra/checkov-requirements.txt
	touch $(CHECKOV)

# What serving needs; the tests' own tools come with `make test` (and lint, typecheck, ...).
install: $(STAMP) $(NOVNC) $(REDOC)

dev: install $(DEV)

up: install
	$(BIN)/tether up

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

# Starts the Firestore and Pub/Sub emulators on free loopback ports, runs pytest, stops them.
# The benchmarks run with fewer rounds than `make bench` gives them: their figures, a glance.
QUICK_BENCH := TETHER_BENCH_SANDBOX_ROUNDS=3 TETHER_BENCH_COLD_ROUNDS=3 \
	TETHER_BENCH_EMULATOR_ROUNDS=21 TETHER_BENCH_READY_ROUNDS=7 TETHER_BENCH_KUBENTLY_ROUNDS=10 \
	TETHER_BENCH_OPENCTROL_SECONDS=1 TETHER_BENCH_OPENCTROL_SAMPLES=4 TETHER_BENCH_LOAD_SECONDS=1
# The suite on two workers, a file at a time (module fixtures stay whole; tests/conftest.py sends
# the longest files out first), then the benchmarks alone: they measure, nothing else may run.
SUITE := $(BIN)/pytest -q -n 2 --dist loadfile --durations=30 --ignore=tests/bench tests
test: lint typecheck $(CHECKOV)
	$(QUICK_BENCH) infra/emulators.sh run sh -c '$(SUITE) && $(BIN)/pytest -q tests/bench'

# Schemathesis against every surface's OpenAPI document: over 10,000 cases, a fresh seed.
fuzz: dev
	TETHER_FUZZ_EXAMPLES=300 TETHER_FUZZ_SEED=$${TETHER_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	    infra/emulators.sh run $(BIN)/pytest -q -s tests/fuzz

bench: dev
	infra/emulators.sh run $(BIN)/pytest -q -s tests/bench

# The fault tests with the outages at full length (the suite runs them shorter).
soak: dev
	TETHER_FAULT_OUTAGE=30 infra/emulators.sh run $(BIN)/pytest -q -s tests/faults

clean:
	rm -rf $(VENV) .venv-checkov .tether .pytest_cache .mypy_cache .ruff_cache \
	    shared/tether/surfaces/static infra/redoc/node_modules
