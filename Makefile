# The two commands of the README are `make run` and `make test`; everything else supports them.
# Every dependency is installed here from the package registries by name (pip, npm, apt-get).

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
RECOMMENDER := $(VENV)/bin/recommender
DATA_DIR    ?= data
IMAGES_DIR  ?= $(DATA_DIR)/images
export DATA_DIR

# Re-install only when the dependency files change.
INSTALL_STAMP := $(VENV)/.installed
DEPS := pyproject.toml requirements/maskrcnn.txt

.PHONY: run test install weights system-test-deps postgres lint bench clean help

help:
	@echo "make run    set up (venv, packages, YOLOv5s weights, database) and serve; IMAGES_DIR=folder is ingested when empty"
	@echo "make test   install everything the tests need and run the whole suite (SQLite + PostgreSQL + Chromium)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(INSTALL_STAMP): $(PY) $(DEPS)
	$(PIP) install --quiet -e '.[test]'
	# pixellib and its two companions declare training-only dependencies (PyQt5, imgaug) that
	# break on numpy 2; their runtime needs are already in pyproject.toml.
	$(PIP) install --quiet --no-deps -r requirements/maskrcnn.txt
	touch $@

install: $(INSTALL_STAMP)

weights: install
	$(RECOMMENDER) fetch-weights --detector yolov5s

run: weights
	IMAGES_DIR="$(IMAGES_DIR)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" backend/entrypoint.sh

# Browser tests use Debian's Chromium (never a browser downloaded by a test tool); the queue
# tests start their own redis-server on a free port (never the shared 6379).
system-test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null || { \
	  echo "installing Debian's chromium, chromium-driver and redis-server"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver redis-server; }

# The suite talks to a real PostgreSQL; start the local cluster if it is installed but stopped.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  command -v pg_ctlcluster >/dev/null || { echo "PostgreSQL is not installed: apt-get install postgresql"; exit 1; }; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
	  for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	@pg_isready -h 127.0.0.1 -p 5432

lint: install
	$(VENV)/bin/ruff check backend tests bench

test: weights system-test-deps postgres lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: weights postgres
	$(PY) bench/detect.py --maskrcnn-limit 5
	$(PY) bench/ingest.py --detect-workers 1,2
	$(PY) bench/http_latency.py
	$(PY) bench/ranking.py --sizes 512,576 --flip --markdown
	$(PY) bench/query.py
	$(PY) bench/memory.py
	$(PY) bench/load.py
	$(PY) bench/frozen_db.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
