# Two commands: `make demo` (install, build everything, serve) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-postgres lint install serve pipeline migrate clean-artifacts poetry-lock check-lock

$(STAMP): pyproject.toml constraints.txt
	@echo "==> Installing into $(VENV) (pinned by constraints.txt)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	@echo "==> Database"
	$(PY) manage.py migrate --noinput -v0

pipeline: migrate
	@echo "==> Demo data"
	$(PY) manage.py generate_demo_data
	@echo "==> Import"
	$(PY) manage.py load_data
	@echo "==> Embeddings"
	$(PY) manage.py build_embeddings
	@echo "==> Training"
	$(PY) manage.py train --activate
	@echo "==> Staff user"
	$(PY) manage.py create_staff_user
	$(PY) manage.py collectstatic --noinput -v0

# The scheduler (retraining when enough new events arrived) runs beside gunicorn and stops with it.
demo: pipeline
	@$(PY) manage.py demo_examples --banner
	@$(PY) manage.py run_scheduler & scheduler=$$!; trap 'kill $$scheduler 2>/dev/null' EXIT; \
		$(VENV)/bin/gunicorn -c gunicorn.conf.py

serve: migrate
	$(PY) manage.py collectstatic --noinput -v0
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

# The database tests run a second time on PostgreSQL when one is reachable (CI starts one); the live services
# of tests/serving choose their databases themselves (SQLite and a scratch PostgreSQL database) in the run above.
POSTGRES_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres

# Most tests run TEST_WORKERS at a time (pytest-xdist: each worker its own test database and its own copy of
# the tiny pipeline, built once under .test-cache; a worker that runs out of tests takes some of those queued
# for another, as their lengths differ a lot); each phase lists its 15 slowest tests;
# those of tests/serving (marked `live`: gunicorn processes, some bounding how soon they react) run one at a
# time afterwards, so no other test competes with them for the CPU.
TEST_WORKERS ?= 2

test: install
	$(VENV)/bin/ruff check modeling recoapi tests benchmarks tools manage.py
	@$(MAKE) --no-print-directory check-lock
	@echo "==> Tests, $(TEST_WORKERS) at a time: models, the API in process, reports, commands, the long ones included"
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not live" --durations=15
	@echo "==> Live services one at a time: load with reloads, killed processes, database outage, several workers"
	$(PY) -m pytest -m live --durations=15
	@$(MAKE) --no-print-directory test-postgres

test-postgres: install
	@if $(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_TEST_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		echo "==> Database tests on PostgreSQL ($(POSTGRES_TEST_URL))"; \
		DATABASE_URL=$(POSTGRES_TEST_URL) $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "database and not slow and not live" --durations=15; \
	else \
		echo "==> PostgreSQL is not reachable at $(POSTGRES_TEST_URL): the PostgreSQL test run is SKIPPED"; \
	fi

# poetry.lock is written from pip's resolution (constraints.txt), see tools/poetry_lock.py; poetry itself
# lives in its own virtualenv, apart from the project's pinned packages.
POETRY_VENV := .venv-poetry
POETRY_VERSION := 2.5.1

$(POETRY_VENV)/.installed:
	$(PYTHON) -m venv $(POETRY_VENV)
	$(POETRY_VENV)/bin/python -m pip install --quiet poetry==$(POETRY_VERSION)
	touch $@

poetry-lock: install $(POETRY_VENV)/.installed
	$(POETRY_VENV)/bin/python tools/poetry_lock.py

check-lock:
	@if $(MAKE) --no-print-directory $(POETRY_VENV)/.installed >/dev/null; then \
		echo "==> poetry check --lock"; $(POETRY_VENV)/bin/poetry check --lock; \
	else \
		echo "==> poetry could not be installed: poetry check --lock is SKIPPED"; \
	fi

clean-artifacts:
	rm -rf data/processed/*.parquet data/processed/manifest.json embeddings/*.parquet embeddings/manifest.json db.sqlite3
