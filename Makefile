# Two commands on a fresh machine: `make run` (demo) and `make test` (whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions of everything `make test` installs (the build backend included, through
# PIP_CONSTRAINT, which pip also applies to the isolated build environment). `make lock`
# refreshes it; pyproject.toml keeps the ranges users install from.
LOCK := requirements/test.lock
# Azurite, the Azure Blob emulator the object-store tests start, from npm (pip cannot install
# it): pinned by tools/azurite/package-lock.json, reinstalled when the pin changes.
AZURITE := tools/azurite
AZURITE_STAMP := $(AZURITE)/node_modules/.installed
# DuckDB reads s3:// and az:// through extensions it downloads on first use; here they come from
# pip, built for DuckDB 1.5.5 only, so the object-store DuckDB reader tests get a venv of their own.
DUCKDB_VENV := .venv-duckdb
DUCKDB_LOCK := requirements/duckdb-readers.lock
DUCKDB_STAMP := $(DUCKDB_VENV)/.installed

.PHONY: install azurite duckdb-readers lock run test bench bench-compaction bench-catalog \
	bench-realtime lint soak soak-batch soak-realtime clean

# One pip call installs the package and everything the tests need, at the locked versions.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/$(LOCK) $(BIN)/python -m pip install --quiet \
		--disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

$(AZURITE_STAMP): $(AZURITE)/package.json $(AZURITE)/package-lock.json
	@command -v npm >/dev/null || { echo "Azurite (the Azure Blob emulator of the tests) needs Node.js and npm: apt-get install nodejs npm" >&2; exit 1; }
	npm ci --prefix $(AZURITE) --no-audit --no-fund --loglevel=error
	@touch $(AZURITE_STAMP)

azurite: $(AZURITE_STAMP)

$(DUCKDB_STAMP): $(DUCKDB_LOCK)
	@test -x $(DUCKDB_VENV)/bin/python || $(PYTHON) -m venv $(DUCKDB_VENV)
	$(DUCKDB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(DUCKDB_LOCK)
	@touch $(DUCKDB_STAMP)

duckdb-readers: $(DUCKDB_STAMP)

install: $(STAMP) $(AZURITE_STAMP) $(DUCKDB_STAMP)

# Resolve pyproject.toml's ranges afresh in a throw-away venv and write the lock from it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade setuptools wheel
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@mkdir -p requirements
	{ echo "# make test installs exactly these (Python 3.11). Refresh: make lock"; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(LOCK)
	rm -rf .lock-venv

run: $(STAMP)
	$(BIN)/python -m lakeexportd.cli.demo

# Two workers (pytest-xdist): the tests mostly wait on real processes and servers, so two
# workers on two cores halve the wall time. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(AZURITE_STAMP) $(DUCKDB_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.delta_memory

# _metadata.json growth with/without compaction, and a DuckDB scan of a 30-day
# one-file-per-minute stream before/after `lakeexportd compact` (results/*.md).
bench-compaction: $(STAMP)
	$(BIN)/python -m benchmarks.metadata_growth
	$(BIN)/python -m benchmarks.compaction_scan

# The catalog's sync after each run of a stream, over many runs (README "Data catalogue").
bench-catalog: $(STAMP)
	$(BIN)/python -m benchmarks.catalog_sync

# A realtime feed (rotate age 5s, idle 2s) under a steady 2,000 rows/s: per-row latency from
# ROWTIME to the commit listing its file, p50/p95/p99/max, the time to the last commit once the
# traffic stops, and lakeexportd_realtime_lag_seconds (results/realtime_latency.md).
bench-realtime: $(STAMP)
	$(BIN)/python -m benchmarks.realtime_latency

# Both soaks, one after the other (not part of `make test`): ~5 min, then ~10 min plus drains.
soak: soak-batch soak-realtime

# 20 feeds for 5 minutes against a sandbox generating 2,000 rows/s.
soak-batch: $(STAMP)
	$(BIN)/python -m benchmarks.soak

# 20 realtime feeds for 10 minutes at 2,000 rows/s into the lakes in total, with a 30 s burst
# at 50,000 rows/s: daemon RSS and open files every 10 s, the backlog drained, then SIGTERM and
# every row of every feed's lake once (results/soak_realtime_latest.json).
soak-realtime: $(STAMP)
	$(BIN)/python -m benchmarks.soak_realtime

lint: $(STAMP)
	$(BIN)/ruff check lakeexportd tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DUCKDB_VENV) .lock-venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache \
		$(AZURITE)/node_modules
