# qpvhub — two commands do all the setup on a fresh Debian/Ubuntu machine: `make demo`, `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The demo needs PostgreSQL + PostGIS, GDAL's tools and Chromium (it prints each fiche quartier to PDF); the
# tests also docker-compose (static check of docker-compose.yml), poppler-utils (pdfinfo, pdftotext) and npm
# (axe-core, the accessibility checker).
DEMO_APT := postgresql-15-postgis-3 gdal-bin chromium
TEST_APT := $(DEMO_APT) docker-compose poppler-utils
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The OGC API server (tipg) has its own virtualenv: its FastAPI is newer than Airflow's, which stays as it is.
# (defined before the rules: make expands prerequisites as it reads them)
API_VENV := .venv-api
API_STAMP := $(API_VENV)/.installed

.PHONY: help setup setup-demo system-deps demo-deps npm-deps api api-deps demo test test-fast lint bench mutation constraints clean airflow airflow-stop

help:
	@echo "make demo   - install what is needed, run the whole chain on the bundled real data"
	@echo "make test   - install what is needed, run every test (unit, PostGIS, S3, Airflow)"
	@echo "make bench  - ingestion benchmark vs ogr2ogr, indicator refresh at national size (bench/results.json)"
	@echo "make mutation - mutation testing of secrecy, promote, quality, registry, INSEE reader (bench/mutation.json)"
	@echo "make api [PORT=8081] - OGC API (Features, vector Tiles) over the published layers, for QGIS"
	@echo "make lint   - ruff and the architecture's import contracts (import-linter)"
	@echo "make airflow / airflow-stop - Airflow 3 on this machine (api-server, scheduler, dag-processor)"

setup: system-deps $(TEST_STAMP) $(API_STAMP)
setup-demo: demo-deps $(STAMP)

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing system packages: $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

# PostgreSQL 15 + PostGIS 3 (the embedded database and the tests), GDAL tools (ogr2ogr/ogrinfo),
# Debian's docker-compose (static validation of docker-compose.yml), Chromium (rendering tests).
system-deps:
	$(call apt_install,$(TEST_APT))

demo-deps:
	$(call apt_install,$(DEMO_APT))

npm-deps:  # only where the machine has no Node.js of its own
	$(call apt_install,npm)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $(STAMP)

$(API_STAMP): constraints-api.txt
	test -d $(API_VENV) || $(PYTHON) -m venv $(API_VENV)
	$(API_VENV)/bin/python -m pip install -q --upgrade pip
	$(API_VENV)/bin/python -m pip install -q -r constraints-api.txt
	touch $(API_STAMP)

api-deps: $(API_STAMP)

# OGC API – Features and Tiles over the published layers, in the foreground: make api [PORT=8081]
PORT ?= 0
api: setup-demo $(API_STAMP)
	$(VENV)/bin/qpvhub api --port $(PORT)

# axe-core (npm registry) checks the portal and the fiches for accessibility in a real browser
AXE_VERSION := 4.14.1
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	@command -v npm >/dev/null || $(MAKE) --no-print-directory npm-deps
	npm install --no-save --no-audit --no-fund --prefix $(VENV)/node axe-core@$(AXE_VERSION) >/dev/null
	touch $(TEST_STAMP)

demo: setup-demo
	$(VENV)/bin/qpvhub migrate
	$(VENV)/bin/qpvhub demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# ruff, then import-linter's contracts (pyproject.toml [tool.importlinter]): layers, no cycles, thin DAG files
lint: setup
	$(VENV)/bin/ruff check plugins dags tests bench
	PYTHONPATH=. $(VENV)/bin/lint-imports

# Airflow without Docker: PostgreSQL metadata database, LocalExecutor; waits until healthy. Installs what the demo
# needs (Airflow is a core dependency), plus the Celery provider and Redis client with EXECUTOR=CeleryExecutor: not
# the test and bench extras nor axe-core. WORKERS=2: two Celery workers on this host.
airflow: setup-demo
	$(if $(filter CeleryExecutor,$(EXECUTOR)),$(PY) -m pip install -q -c constraints.txt -e '.[celery]',)
	$(PY) -m qpvhub.airflow.native start $(if $(PORT),--port $(PORT),) $(if $(EXECUTOR),--executor $(EXECUTOR),) \
		$(if $(WORKERS),--workers $(WORKERS),)

airflow-stop:
	$(PY) -m qpvhub.airflow.native stop

# the GTFS and OGC API benches use the configured (or embedded) database: migrated first, as on a fresh clone
bench: setup $(API_STAMP)
	$(VENV)/bin/qpvhub migrate
	$(PY) bench/run_all.py

# Not part of `make test` (it takes minutes): mutmut on the core, bench/mutation.json with the survivors.
mutation: setup
	$(PY) -m pip install -q -c constraints.txt -e '.[mutation]'
	$(PY) bench/mutation.py

constraints:
	$(PY) -m pip freeze --exclude-editable | grep -v '^qpvhub' > constraints.txt.new
	{ echo "# Exact versions of a resolved install (Python 3.11, $$(date +%F)): pip install -c constraints.txt -e '.[test,bench]'"; \
	  echo "# Regenerate with: make constraints"; cat constraints.txt.new; } > constraints.txt && rm constraints.txt.new

# Stops the embedded cluster and removes it, wherever it lives (/var/lib/qpvhub/<id> for a root-only clone).
clean:
	-[ -d .qpvhub/pg ] && $(PY) -m qpvhub.platform.embedded destroy .qpvhub/pg
	rm -rf .qpvhub .pytest_cache .ruff_cache
