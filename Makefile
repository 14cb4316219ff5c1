# The two commands: `make run` (the whole platform on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,ml,labelstudio
# Passed to `make run` only: the tests make their own data dir.
AFFECTLOOP_DATA_DIR ?= $(CURDIR)/var
AFFECTLOOP_HOST ?= 127.0.0.1
AFFECTLOOP_PORT ?= 8000
RUN_ENV := AFFECTLOOP_DATA_DIR=$(AFFECTLOOP_DATA_DIR) AFFECTLOOP_HOST=$(AFFECTLOOP_HOST) AFFECTLOOP_PORT=$(AFFECTLOOP_PORT)

# `make run` keeps a generated secret in the data dir unless one is given in the environment.
ifeq ($(strip $(DJANGO_SECRET_KEY)$(DJANGO_SECRET_KEY_FILE)),)
RUN_SECRET := $(AFFECTLOOP_DATA_DIR)/secret_key
RUN_ENV += DJANGO_SECRET_KEY_FILE=$(RUN_SECRET)
endif

.PHONY: run test venv bench-ingest clean-data screenshots

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed-$(EXTRAS)

# umask 077 and a 0700 data dir: the SQLite file holds sessions and password hashes.
$(AFFECTLOOP_DATA_DIR)/secret_key:
	mkdir -p -m 700 $(AFFECTLOOP_DATA_DIR)
	umask 077; $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

run: venv $(RUN_SECRET)
	@command -v ffprobe >/dev/null || echo "warning: ffmpeg/ffprobe not found: clips cannot be validated (apt-get install ffmpeg)"
	umask 077; $(RUN_ENV) $(PY) manage.py bootstrap --url http://$(AFFECTLOOP_HOST):$(AFFECTLOOP_PORT)/
	umask 077; $(RUN_ENV) PATH="$(abspath $(VENV))/bin:$$PATH" exec $(VENV)/bin/honcho -d $(CURDIR) -f platform/Procfile.embedded start

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench-ingest: venv
	$(PY) bench/ingest.py $(BENCH_ARGS)

clean-data:
	rm -rf $(AFFECTLOOP_DATA_DIR)

# PNGs of the main pages, taken by the browser tests on the embedded platform, into docs/screenshots/.
screenshots: venv
	AFFECTLOOP_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/browser -q -p no:cacheprovider

# `make demo`: the whole loop offline (sample clips, a tiny InternVL pre-labeling them, verified labels, a
# retraining that is evaluated and promoted, new pre-labels), in its own data dir: ./var-demo unless
# AFFECTLOOP_DATA_DIR is given. A second `make demo` on the same dir reuses the finished demo; `make
# clean-data AFFECTLOOP_DATA_DIR=<dir>` first rebuilds it. Then: `make run AFFECTLOOP_DATA_DIR=<dir>`.
DEMO_DATA_DIR := $(if $(filter file,$(origin AFFECTLOOP_DATA_DIR)),$(CURDIR)/var-demo,$(abspath $(AFFECTLOOP_DATA_DIR)))
DEMO_ENV := AFFECTLOOP_DATA_DIR=$(DEMO_DATA_DIR) AFFECTLOOP_MODEL_DIR=$(DEMO_DATA_DIR)/models
ifeq ($(strip $(DJANGO_SECRET_KEY)$(DJANGO_SECRET_KEY_FILE)),)
DEMO_ENV += DJANGO_SECRET_KEY_FILE=$(DEMO_DATA_DIR)/secret_key
endif

.PHONY: demo
demo: venv
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { echo "make demo needs ffmpeg and ffprobe (apt-get install ffmpeg)"; exit 1; }
	mkdir -p -m 700 $(DEMO_DATA_DIR)
	@test -n "$(strip $(DJANGO_SECRET_KEY)$(DJANGO_SECRET_KEY_FILE))" || test -f $(DEMO_DATA_DIR)/secret_key || { umask 077; $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $(DEMO_DATA_DIR)/secret_key; }
	umask 077; $(DEMO_ENV) $(PY) manage.py bootstrap --url http://$(AFFECTLOOP_HOST):$(AFFECTLOOP_PORT)/
	umask 077; $(DEMO_ENV) $(PY) manage.py demo
