# The README's two commands: `make demo` runs the demo, `make test` runs the tests.
# Each sets up everything it needs: a virtualenv in .venv, the package, and (through
# diana-stack) the Kafka and DynamoDB Local jars, resolved once by Maven.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test down status bench bench-stats bench-traffic bench-ingest bench-freshness bench-backfill bench-sequential bench-refresh bench-bandit bench-parallel bench-duplicates bench-formats reliability

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Diana needs Python 3.11 (try: make PYTHON=python3.11 ...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

# The whole product: Kafka, DynamoDB Local, the Dagster webserver and daemon, 2 minutes of
# traffic, the pipeline catching up, the report; the UI stays on http://127.0.0.1:3000.
# Options: make demo DEMO_ARGS="--sink csv --eps 100 --duration 60"
demo: $(INSTALLED)
	$(BIN)/diana-demo $(DEMO_ARGS)

# Lint, then every test; the server tests start their own private stack on free ports.
test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

down:
	$(BIN)/diana-stack down

status:
	$(BIN)/diana-stack status

# Every benchmark below, one after the other (about 42 minutes); each writes its section of
# docs/benchmarks.md and prints its table.
bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks

# The statistics benchmark: Diana beside a numpy Monte Carlo and bayesian-testing; then the
# Gamma and normal families beside a numpy Monte Carlo.
bench-stats: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.stats_benchmark
	$(BIN)/python -m benchmarks.stats_families_benchmark

# The sequential benchmark: false winners under continuous monitoring and power, for today's
# rule, Diana's anytime-valid rule and an asymptotic confidence sequence (simulation).
bench-sequential: $(INSTALLED)
	$(BIN)/python -m benchmarks.sequential_benchmark

# The bandit benchmark: regret, bias and SRM of a fixed split and bandits updated daily or
# every window, by simulation (issue 23).
bench-bandit: $(INSTALLED)
	$(BIN)/python -m benchmarks.bandit_benchmark

# The refresh benchmark: one live refresh of the latest window against 1M, 10M and 30M events
# of history (the baseline of incremental state).
bench-refresh: $(INSTALLED)
	$(BIN)/python -m benchmarks.refresh_benchmark

# The traffic benchmark: Diana's unthrottled traffic beside a bare producer (own Kafka).
bench-traffic: $(INSTALLED)
	$(BIN)/python -m benchmarks.traffic_benchmark

# The ingest benchmark: Diana's ingestion beside a bare and a per-event consumer, and its
# peak RSS, on 2M- and 8M-event backlogs (own Kafka; about 10 minutes).
bench-ingest: $(INSTALLED)
	$(BIN)/python -m benchmarks.ingest_benchmark

# The parallel benchmark: one ingestion run and two at once into the DuckLake store (scale
# profile: own Kafka and PostgreSQL; about 3 minutes).
bench-parallel: $(INSTALLED)
	$(BIN)/python -m benchmarks.parallel_benchmark

# The duplicate-check benchmark: one batch stored as its hourly window fills to 8M events,
# beside the window-wide check it replaced (own DuckDB file and PostgreSQL; about 5 minutes).
bench-duplicates: $(INSTALLED)
	$(BIN)/python -m benchmarks.duplicate_check_benchmark

# The table-format benchmark: the shared store as DuckLake tables beside Apache Iceberg
# (pyiceberg), both catalogs in PostgreSQL (own PostgreSQL; about 5 minutes).
bench-formats: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.table_format_benchmark

# The freshness benchmark: event to posterior in the CSV sink, p50/p95, with the daemon
# doing everything at 500 events/s for 5 minutes (own stack; about 7 minutes).
bench-freshness: $(INSTALLED)
	$(BIN)/python -m benchmarks.freshness_benchmark

# The backfill benchmark: the statistics job over 30 days of hourly windows (10M events) in
# one run, beside a plain DuckDB GROUP BY (own DuckDB file; about 3 minutes).
bench-backfill: $(INSTALLED)
	$(BIN)/python -m benchmarks.backfill_benchmark

# The reliability suite at full size (the test command runs it smaller): each scenario
# prints what it broke and what it found, and writes its section of docs/reliability.md.
reliability: $(INSTALLED)
	$(BIN)/python -m reliability
