# Redress — the two set-up commands are `make run` and `make test`.
# Without environment: SQLite under var/ and an embedded Celery broker (no PostgreSQL or Redis).
# With DATABASE_URL / CELERY_BROKER_URL set: PostgreSQL and Redis.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run test lint bench migrate worker clean serve

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# setuptools prints a boxed "Editable installation" notice on every editable build: not an error.
	PYTHONWARNINGS="ignore:Editable installation" \
	  $(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

# Web server on $(HOST):$(PORT), plus a Celery worker with embedded beat; Ctrl-C stops all.
run: migrate
	$(PY) manage.py seed_demo
	@echo "Redress: http://$(HOST):$(PORT)/  admin: /admin/ (admin/admin; reviewer demo/demo)  API docs: /api/docs/"
	@echo "Next: the README's walkthrough, pasted block by block into another shell."
	@trap 'kill 0' INT TERM EXIT; \
	  $(VENV)/bin/celery -A config worker --beat --loglevel=INFO --concurrency=2 & \
	  $(PY) manage.py runserver $(HOST):$(PORT)

# Production web tier: nginx on $(LISTEN) (buffers requests and responses) in front of gunicorn
# on $(APP) with $(WORKERS) gthread workers (config/serve.py, config/nginx.conf.template);
# SERVE_ARGS="--forwarded-proto header" behind a TLS-terminating load balancer.
LISTEN  ?= 0.0.0.0:8000
APP     ?= 127.0.0.1:8001
WORKERS ?= 4
serve: install
	$(PY) config/serve.py --listen $(LISTEN) --app $(APP) --workers $(WORKERS) $(SERVE_ARGS)

worker: install
	$(VENV)/bin/celery -A config worker --beat --loglevel=INFO

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	env -u DATABASE_URL $(PY) manage.py makemigrations --check --dry-run

# Benchmarks run on PostgreSQL + Redis (local defaults below) and print one JSON document.
bench: install
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/redress_bench} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0} \
	$(PY) tests/bench/run.py

clean:
	rm -rf var .pytest_cache .ruff_cache
