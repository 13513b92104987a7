# Every target creates and reuses the virtual environment in .venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
SPEC := spec/registry-blob.yaml
GEN_CONFIG := spec/generator-config.yaml
GEN_PACKAGE := generated/acr_blob_api
# The generator runs ruff from PATH: make it the venv's pinned one.
GEN := PATH="$(BIN):$$PATH" $(BIN)/openapi-python-client generate --path $(SPEC) \
	--config $(GEN_CONFIG) --meta none --fail-on-warning

.PHONY: venv system-deps azurite generate check-generated generate-sync check-sync validate-spec test lint demo compare docs clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+" >&2; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,generate,docs]'
	touch $@

venv: $(STAMP)

# The real registry server the tests and the demo run (Debian's docker-registry), and skopeo.
system-deps:
	@tools/system-deps.sh

# Azurite, the Azure Storage emulator behind the testbed's ACR deployment (npm, pinned by
# tools/testbed/azurite/package-lock.json; Debian's nodejs and npm when node is missing).
azurite:
	@tools/testbed/install-azurite.sh

validate-spec: $(STAMP)
	$(BIN)/openapi-spec-validator $(SPEC)

generate: validate-spec
	rm -rf $(GEN_PACKAGE)
	$(GEN) --output-path $(GEN_PACKAGE)

check-generated: validate-spec
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GEN) --output-path "$$tmp/acr_blob_api" >/dev/null || exit 1; \
	diff -r -x __pycache__ "$$tmp/acr_blob_api" $(GEN_PACKAGE) >/dev/null || \
	{ echo "generated/ is stale against spec/: run 'make generate' and commit the result" >&2; exit 1; }
	@echo "generated/ matches spec/"

# The sync client is written from the async one (overlay/acr_blob/_async -> _sync);
# SYNC_ROOT names another copy of the project to check (the tests do).
SYNC_ROOT ?= .
generate-sync: $(STAMP)
	$(BIN)/python -m tools.unasync

check-sync: $(STAMP)
	@$(BIN)/python -m tools.unasync --check --root $(SYNC_ROOT)

test: system-deps azurite check-generated check-sync
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check overlay tools tests
	$(BIN)/ruff format --check overlay tools tests
	$(BIN)/mypy --strict overlay/acr_blob tools

demo: system-deps $(STAMP)
	$(BIN)/python -m tools.demo

# Every client against the scenario catalog: docs/parity.md and docs/parity.json.
compare: system-deps azurite $(STAMP)
	tools/compare/install-peers.sh
	$(BIN)/python -m tools.compare.run

# Download throughput of acr-blob, its peers (when tools/compare/install-peers.sh has installed
# them) and the limits: docs/benchmarks.md, docs/benchmarks.json and the SVG charts beside them
# (about 25 minutes on 2 cores). A quick run:
# make bench BENCH_ARGS='--size 64MiB --throttle-size 64MiB --rounds 1 --no-write'
.PHONY: bench
bench: system-deps $(STAMP)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

# Before a release, not in CI: the fast body read (overlay/acr_blob/_fast_read.py, which reads
# beneath httpcore and anyio) against the newest httpcore, anyio and h11, in a scratch venv.
NEWEST := .venv-newest
.PHONY: test-newest
test-newest: system-deps
	rm -rf $(NEWEST)
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	$(NEWEST)/bin/pip install -q --disable-pip-version-check --upgrade --no-deps httpcore anyio h11
	@$(NEWEST)/bin/pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(httpx|httpcore|anyio|h11) '
	$(NEWEST)/bin/pytest -q tests/test_direct_io.py

# The documentation site, docs/ + mkdocs.yml -> site/ (every warning is an error).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(NEWEST) .compare site build dist *.egg-info overlay/*.egg-info generated/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
