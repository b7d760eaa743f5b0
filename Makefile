# One command to run the console, one to test it. Both build .venv from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The console calls its built-in sandbox over HTTP, so it needs an address it can dial.
SANDBOX_URL ?= http://$(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST)):$(PORT)/sandbox

.PHONY: run admin test test-services lint format bench worker beat clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py setup_console --sandbox-url $(SANDBOX_URL)
	@echo
	@echo "  Replicate console: http://$(HOST):$(PORT)/"
	@echo "  First time? Create an admin in another terminal:  make admin"
	@echo
	$(BIN)/python manage.py runserver --noreload --nostatic $(HOST):$(PORT)

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

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite against real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL).
test-services: $(VENV)/.dev
	REQUIRE_SERVICES=1 $(BIN)/pytest -m "not browser" $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var
