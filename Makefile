# The project's vocabulary: `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NATIVE_STAMP := $(VENV)/.native-installed
TASKS_VENV := .venv-tasks
TASKS_STAMP := $(TASKS_VENV)/.installed
PROFILE ?= local
# Who starts the Firestore emulator: gcloud (the Cloud CLI's, the default) or firebase (firebase-tools).
EMULATORS ?= gcloud
RUN_DIR := .run
NODE_STAMP := node_modules/.installed
HOSTING_STAMP := hosting/vendor/.built
CLI_STAMP := $(VENV)/.cli-installed

.PHONY: help install system-deps up down status demo test unit lint typecheck bench fuzz clean apikey stage

help:
	@echo "make demo   - start the local stack, process a sample CSV end to end, show the results"
	@echo "make test   - lint, type-check and run every test (starts and stops its own services)"
	@echo "make up     - start the local stack in the background and print its base URL"
	@echo "              (PROFILE=cloud: the four Cloud Functions over emulated Cloud Tasks and Eventarc)"
	@echo "              (EMULATORS=firebase: Firestore started by firebase-tools instead of the Cloud CLI)"
	@echo "make down   - stop exactly what make up started"
	@echo "make bench  - run the benchmarks and write BENCHMARKS.md"
	@echo "make fuzz   - fuzz the codec under ASan and UBSan (FUZZ_SECONDS per target, FUZZ_TARGETS)"
	@echo "make apikey NAME=<client> - make an API key; prints it once and its API_KEYS entry"
	@echo "make stage  - stage the four Cloud Functions into .build/functions, as deploy.sh ships them"

$(STAMP): requirements.txt requirements-local.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

$(TASKS_STAMP): requirements-tasks-emulator.txt
	@test -x $(TASKS_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_VENV)
	$(TASKS_VENV)/bin/python -m pip install --quiet -r requirements-tasks-emulator.txt
	@touch $(TASKS_STAMP)

# The DCT-domain JPEG codec, a C extension over libjpeg-turbo (shared/adapters/codec/jpeg_requantizer.py).
$(NATIVE_STAMP): $(STAMP) native/pyproject.toml native/setup.py $(wildcard native/jpeg_requantize/*)
	@# A build left in native/build would be packaged again as it was: build from scratch.
	rm -rf native/build
	$(PY) -m pip install --quiet ./native
	@touch $@

# firebase-tools (the Firebase emulators) and Swagger UI, pinned in package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# hosting/ completed with what is copied, not written: Swagger UI and openapi.yaml (/docs).
$(HOSTING_STAMP): $(NODE_STAMP) $(STAMP) openapi.yaml scripts/build_hosting.py
	$(PY) scripts/build_hosting.py >/dev/null
	@touch $@

# The imgsvc command line (imgsvc_cli/), editable, so .venv/bin/imgsvc runs this checkout.
$(CLI_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

install: system-deps $(STAMP) $(TASKS_STAMP) $(NATIVE_STAMP) $(NODE_STAMP) $(HOSTING_STAMP) $(CLI_STAMP)

# What deploy.sh ships: the four Cloud Functions (.build/functions), the codec as a
# self-contained wheel in each (built once per state of native/, .build/wheels), and the
# Firebase config with Hosting's rewrites for REGION (.build/firebase).
REGION ?= us-central1
stage: system-deps $(STAMP) $(HOSTING_STAMP)
	@$(PY) scripts/stage_functions.py --out .build/functions
	@$(PY) scripts/stage_firebase.py --region $(REGION) --out .build/firebase

# Debian packages the stack needs; installed when missing and we are root, else explained.
system-deps:
	@./scripts/system-deps.sh

up: install
	@EMULATORS=$(EMULATORS) $(PY) -m local_profile.stack up --profile $(PROFILE) --run-dir $(RUN_DIR)

down:
	@if [ -x $(PY) ]; then $(PY) -m local_profile.stack down --run-dir $(RUN_DIR); else echo "nothing was running"; fi

# An API key for a client: the key is printed once, API_KEYS gets only its SHA-256.
apikey: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make apikey NAME=<client>"; exit 2; }
	@$(PY) -m local_profile.apikeys new "$(NAME)"

status:
	@$(PY) -m local_profile.stack status --run-dir $(RUN_DIR)

demo: install
	@EMULATORS=$(EMULATORS) $(PY) -m local_profile.demo --profile $(PROFILE) --run-dir $(RUN_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) $(NATIVE_STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) $(NATIVE_STAMP)
	$(VENV)/bin/pytest tests/unit -q

test: install lint typecheck
	$(VENV)/bin/pytest -q

bench: install
	$(PY) -m bench.run

# Coverage-guided fuzzing of the codec (fuzz/): libFuzzer on jpeg_requantize's C core, atheris on
# the shipped and the general codec's entry points. Findings go to .build/fuzz/findings/; make
# test runs a few seconds of each and every input kept in tests/data/fuzz/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= requantize,shipped,general
fuzz: install
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS) --targets $(FUZZ_TARGETS)

clean: down
	rm -rf $(VENV) $(TASKS_VENV) .pytest_cache .mypy_cache .ruff_cache $(RUN_DIR) .build node_modules hosting/vendor hosting/openapi.yaml
