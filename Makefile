# Tenure: `make run` to try it, `make test` to test it. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Tests run against real PostgreSQL and Redis (Redis started below when local
# and down). The database: TEST_DATABASE_URL when set; else a server on
# LOCAL_POSTGRES when one answers; else the embedded PostgreSQL of
# data/test-postgres (no install needed), started for the run and stopped after.
# `python -m config.embedded_postgres test-url` makes that choice.
TEST_DATABASE_URL ?=
LOCAL_POSTGRES ?= 127.0.0.1:5432
TEST_REDIS_URL ?= redis://127.0.0.1:6379
TEST_ENV = CELERY_BROKER_URL=$(TEST_REDIS_URL)/15 CACHE_URL=$(TEST_REDIS_URL)/14 \
	TENURE_DATA_DIR=$(CURDIR)/data/test-postgres TEST_DATABASE_URL='$(TEST_DATABASE_URL)'
# $(call with_test_database,COMMAND): COMMAND with DATABASE_URL set to the tests'
# database; the embedded server (if that is the one) stopped after, pass or fail.
with_test_database = db=$$($(TEST_ENV) $(PY) -m config.embedded_postgres test-url \
		--local $(LOCAL_POSTGRES)) || exit 1; \
	echo "Tests on $$db"; \
	$(TEST_ENV) DATABASE_URL=$$db $(1); status=$$?; \
	$(TEST_ENV) $(PY) -m config.embedded_postgres stop 2>/dev/null; exit $$status

.PHONY: install frontend sdks run test fuzz chaos screenshots lint format bench services clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The journey builder's front end (apps/builder/frontend, React + React Flow):
# `npm ci` when the lock file changed, `npm run build` (Vite) when a source
# changed, nothing when the build is up to date. The output goes to
# apps/builder/static/builder/dist (git-ignored), served as static files.
FRONTEND := apps/builder/frontend
FRONTEND_MANIFEST := apps/builder/static/builder/dist/.vite/manifest.json
FRONTEND_SOURCES := $(shell find $(FRONTEND)/src -type f 2>/dev/null) \
	$(FRONTEND)/vite.config.js $(FRONTEND)/package.json

frontend: $(FRONTEND_MANIFEST)

$(FRONTEND)/node_modules/.package-lock.json: $(FRONTEND)/package-lock.json
	@command -v npm >/dev/null || { echo "make frontend needs Node.js (20.19+) and npm: apt-get install nodejs npm"; exit 1; }
	cd $(FRONTEND) && npm ci --no-audit --no-fund
	touch $@

$(FRONTEND_MANIFEST): $(FRONTEND)/node_modules/.package-lock.json $(FRONTEND_SOURCES)
	cd $(FRONTEND) && npm run build
	touch $@

# Segment's Node SDK (@segment/analytics-node), which the tests drive against
# a live server (tests/sdks/node, tests/integration/test_segment_sdks.py):
# `npm ci` when its lock file changed.
SDKS_NODE := tests/sdks/node

sdks: $(SDKS_NODE)/node_modules/.package-lock.json

$(SDKS_NODE)/node_modules/.package-lock.json: $(SDKS_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo "make sdks needs Node.js (20+) and npm: apt-get install nodejs npm"; exit 1; }
	cd $(SDKS_NODE) && npm ci --no-audit --no-fund
	touch $@

# With DATABASE_URL unset, the first manage.py step starts the embedded
# PostgreSQL under data/postgres (the first time: initdb); run_local points
# web, worker and beat at it over its Unix socket and stops it on Ctrl-C.
# The system checks' warnings (settings fit for this machine only: tenure.W001,
# tenure.W002) print once, from migrate; the other set-up steps skip the
# checks, and run_local runs with DEBUG=1, which silences them.
run: install frontend
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_local_admin --skip-checks
	$(PY) manage.py load_templates fixtures/templates.json --only-new --skip-checks
	$(PY) manage.py load_surveys fixtures/surveys.json --only-new --skip-checks
	$(PY) manage.py load_segments fixtures/segments.json --only-new --skip-checks
	$(PY) manage.py load_journeys fixtures/journeys --only-new --skip-checks
	$(PY) manage.py seed_demo --if-empty --skip-checks
	$(PY) manage.py refresh_segments --skip-checks
	@echo "Starting web (http://127.0.0.1:8000), Celery worker and Celery beat. Ctrl-C stops them all."
	@DEBUG=1 $(PY) manage.py run_local

# Redis, which the tests (and production) use; PostgreSQL needs no service
# (the embedded one stands in when no server answers).
services:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no

# Every test, once, on PostgreSQL + Redis.
test: install frontend sdks services
	@$(call with_test_database,$(PY) -m pytest $(PYTEST_ARGS))

# The attack inputs at scale (tests/attack): schemathesis against the OpenAPI
# document with every check, and the hypothesis properties of the public pages,
# webhooks, conditions, journey files and templates, FUZZ_EXAMPLES (1,000)
# examples each; `make test` runs 20, the same ones every time. Here new ones
# each run; failing ones are kept in data/hypothesis and tried first next time.
FUZZ_EXAMPLES ?= 1000
fuzz: install services
	@$(call with_test_database,FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/attack \
		$(PYTEST_ARGS))

# Fault injection at scale (tests/chaos): each scenario (worker kill -9, broker
# kill and restart, provider 429/5xx storm, provider slower than the timeout)
# with CHAOS_MESSAGES emails, CHAOS_REPEAT times, then a table of the counts.
# `make test` runs 60 messages once.
CHAOS_MESSAGES ?= 2000
CHAOS_REPEAT ?= 10
chaos: install services
	@$(call with_test_database,CHAOS_MESSAGES=$(CHAOS_MESSAGES) CHAOS_REPEAT=$(CHAOS_REPEAT) \
		$(PY) -m pytest tests/chaos $(PYTEST_ARGS))

# docs/screenshots/*.png (the builder and each dashboard, shown in the README):
# the browser tests, run with TENURE_SCREENSHOTS=1 so they save what they see.
screenshots: install frontend services
	@$(call with_test_database,TENURE_SCREENSHOTS=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS))

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install services
	$(PY) -m bench

clean:
	rm -rf $(VENV) data
