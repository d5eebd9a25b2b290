# Every target sets itself up: a fresh clone needs only python3 (>=3.11), node and npm.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_JS := node_modules/.installed

.PHONY: setup demo lint test test-fast bench bench-sparse bench-rss lock contracts clean deb

setup: $(STAMP_PY) $(STAMP_JS)

# What gets installed is requirements/dev.lock (exact versions, sha256 hashes): pip refuses
# anything else. pyproject.toml keeps compatible ranges; `make lock` re-pins within them.
$(STAMP_PY): pyproject.toml requirements/dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(STAMP_JS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/blockhost demo

# ruff (rules in pyproject.toml) and mypy (strict on listener/ and provisioner/): part of `make test`.
lint: setup
	$(VENV)/bin/ruff check --no-cache listener provisioner blockhost_data bench tests
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
test: setup lint
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Replay throughput on a local anvil (see README "Benchmarks"); e.g. BENCH_FLAGS="--events 20000".
BENCH_FLAGS ?= --events 100000 --repeat 3
bench: setup
	$(PY) -m bench $(BENCH_FLAGS)

# Catch-up over 1,000,000 empty blocks on a synthetic node (see README "Benchmarks").
SPARSE_FLAGS ?= --blocks 1000000 --repeat 3
bench-sparse: setup
	$(PY) -m bench.sparse $(SPARSE_FLAGS)

# Peak RSS of a fresh replay process per size, and its slope (see README "Benchmarks").
RSS_FLAGS ?= --events 25000,50000,100000
bench-rss: setup
	$(PY) -m bench.rss $(RSS_FLAGS)

# Re-pin requirements/*.lock (hashes from PyPI) within pyproject's ranges; takes minutes.
PIP_TOOLS := .venv-lock/bin/pip-compile
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock:
	test -x $(PIP_TOOLS) || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet pip-tools==7.6.2)
	$(PIP_TOOLS) $(LOCK_FLAGS) -o requirements/runtime.lock pyproject.toml
	$(PIP_TOOLS) $(LOCK_FLAGS) --extra test --extra demo -o requirements/dev.lock pyproject.toml

contracts: $(STAMP_JS)
	node contracts/build.mjs

clean:
	rm -rf $(VENV) node_modules .pytest_cache

# The subscriber's pages (web/): bundled by the pinned esbuild into blockhost_data/web/ (committed).
web: $(STAMP_JS)
	node web/build.mjs

# The Debian package (debian/, dh-virtualenv from requirements/runtime.lock), built from a copy
# of the sources into dist/ (see docs/packaging.md). Needs: apt install devscripts debhelper
# dh-virtualenv python3-venv.
deb:
	packaging/build-deb.sh dist
