# Two commands: `make demo` (install, build everything, serve) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install serve pipeline migrate clean-artifacts

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

demo: pipeline
	@echo "==> Serving on http://127.0.0.1:8000 (Ctrl-C to stop). Try:"
	@$(PY) manage.py demo_examples
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

serve: migrate
	$(PY) manage.py collectstatic --noinput -v0
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

test: install
	$(VENV)/bin/ruff check modeling recoapi tests manage.py
	$(PY) -m pytest

clean-artifacts:
	rm -rf data/processed/*.parquet data/processed/manifest.json embeddings/*.parquet embeddings/manifest.json db.sqlite3
