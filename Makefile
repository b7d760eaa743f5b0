# One command to run the console, one to test it. Both build .venv from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The console calls its built-in sandbox over HTTP, so it needs an address it can dial.
SANDBOX_URL ?= http://$(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST)):$(PORT)/sandbox
VAR_DIR ?= var
# `make up`: web processes (sharing PORT) and the sandbox's own port (demo only).
WEB ?= 2
SANDBOX_PORT ?= 8001
# make up starts the sandbox unless a real token is given or the sandbox is turned off.
UP_SANDBOX := $(if $(or $(REPLICATE_API_TOKEN),$(filter 0 false off no,$(SANDBOX_ENABLED))),,sandbox)

.PHONY: run dev up admin test test-fast test-services lint format bench soak worker beat clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

# The product, embedded: DEBUG off (the console's own error pages), secrets generated into
# var/, SQLite, the sandbox on. One daphne serves pages, static files and websockets.
run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/python manage.py setup_console --sandbox-url $(SANDBOX_URL)
	rm -rf $(VAR_DIR)/metrics
	@echo
	@echo "  Replicate console: http://$(HOST):$(PORT)/"
	@echo "  First time? Create an admin in another terminal:  make admin"
	@echo
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# For developing the console: DEBUG (technical error pages) and autoreload.
dev: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py setup_console --sandbox-url $(SANDBOX_URL)
	DEBUG=1 $(BIN)/python manage.py runserver --nostatic $(HOST):$(PORT)

# The production shape on one machine (Procfile, honcho): WEB daphne processes sharing
# PORT, a Celery worker, beat; PostgreSQL and Redis are yours to give.
up: $(VENV)/.runtime
	@if [ -z "$(DATABASE_URL)" ] || [ -z "$(REDIS_URL)" ]; then \
	  echo "make up runs several processes, so they need a shared database and Redis."; \
	  echo "Set DATABASE_URL (PostgreSQL) and REDIS_URL, for example:"; \
	  echo "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/console REDIS_URL=redis://127.0.0.1:6379/0 make up"; \
	  echo "(One process with nothing to set up: make run.)"; \
	  exit 2; fi
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/python manage.py setup_console --sandbox-url http://127.0.0.1:$(SANDBOX_PORT)/sandbox
	rm -rf $(VAR_DIR)/metrics
	@echo
	@echo "  Replicate console: http://$(HOST):$(PORT)/  ($(WEB) web processes, a worker, beat)"
	@echo
	PREDICTION_EXECUTOR=celery WEB_PORT=$(PORT) SANDBOX_PORT=$(SANDBOX_PORT) \
	  $(BIN)/honcho start -f Procfile -c web=$(WEB) web worker beat $(UP_SANDBOX)

admin: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py createsuperuser

worker: $(VENV)/.runtime
	$(BIN)/celery -A project worker --pool threads --concurrency 100 --loglevel=INFO

beat: $(VENV)/.runtime
	$(BIN)/celery -A project beat --loglevel=INFO

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Each run counts its metrics afresh (the console processes tests start share them).
# SQLite without WAL: see SQLITE_JOURNAL_MODE in project/settings.py.
TEST_METRICS = rm -rf $(VAR_DIR)/test-metrics && SQLITE_JOURNAL_MODE=DELETE PROMETHEUS_MULTIPROC_DIR=$(VAR_DIR)/test-metrics

test: lint
	$(TEST_METRICS) $(BIN)/pytest $(PYTEST_ARGS)

# While working: no lint, and none of the browser, process-killing or slow tests (under a
# minute). make test runs them all.
test-fast: $(VENV)/.dev
	$(TEST_METRICS) $(BIN)/pytest -m "not browser and not processes and not slow" $(PYTEST_ARGS)

# The suite against real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL).
test-services: $(VENV)/.dev
	$(TEST_METRICS) REQUIRE_SERVICES=1 $(BIN)/pytest -m "not browser" $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

# Load and faults on the production shape (2 web + 2 workers on PostgreSQL and Redis);
# SOAK_MINUTES=30 for the long soak. Not part of make test. See bench/soak.py.
soak: $(VENV)/.dev
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var
