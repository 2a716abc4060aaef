"""Fixtures for e2e tests: one shared server per session, a namespace per test, real clients.

- ``cluster``: session-scoped `harness.Cluster`; tests isolate themselves by namespace.
- ``namespace``: a fresh namespace named after the test; deleted (without waiting) afterwards.
- ``kubectl``: a `harness.Kubectl`, parametrized over kubectl 1.32 and 1.33. A missing binary
  fails the test with the reason; it never skips.
- ``helm``: ``helm(*args)`` running Helm 4 against the cluster, with HELM_* dirs in the cluster dir.
- ``make_cluster``: a factory for tests that need a private server (restart, kill -9).
On failure, the server log written during the test is attached to the report.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

KUBECTL_VERSIONS = ("1.32", "1.33")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = harness.Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
    except harness.ServerNotReady as e:
        c.stop()
        pytest.fail(str(e), pytrace=False)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory):
    """The test images, built once per session from Debian binaries (scripts/build-images.py)."""
    from tests.support.registry import build_images
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory, images_dir):
    """A cluster with one node agent, as `make up` starts it, in a network namespace of its own
    with a seeded registry as the docker.io mirror (tests/e2e/nodes.py). Shared by the node
    tests; each works in its own namespace."""
    import nodes
    c = nodes.NodeCluster(tmp_path_factory.mktemp("node-cluster"), images_dir=images_dir)
    try:
        c.start()
        c.wait_node_ready()
    except harness.ServerNotReady as e:
        c.destroy()
        pytest.fail(str(e), pytrace=False)
    yield c
    c.destroy()


@pytest.fixture
def node_namespace(node_cluster, request) -> str:
    """A fresh namespace in `node_cluster` with its ``default`` ServiceAccount in place."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    node_cluster.kubectl("create", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    harness.eventually(lambda: node_cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                                                    check=False).returncode == 0, timeout=30,
                       what=f"the default ServiceAccount in {name}")
    yield name
    if node_cluster.running:
        node_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(**kwargs)`` starts a private `Cluster` in ``tmp_path``; stopped at teardown."""
    started: list[harness.Cluster] = []

    def make(**kwargs) -> harness.Cluster:
        c = harness.Cluster(tmp_path / f"cluster{len(started)}", **kwargs)
        started.append(c)
        try:
            return c.start()
        except harness.ServerNotReady as e:
            pytest.fail(str(e), pytrace=False)

    yield make
    for c in started:
        c.stop()


@pytest.fixture(autouse=True)
def _server_log_on_failure(request):
    """Remember where the shared server's log stood, so a failure can show what it logged."""
    if "cluster" in request.fixturenames:
        c = request.getfixturevalue("cluster")
        request.node._kubeling_log = (c, len(c.log()))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    mark = getattr(item, "_kubeling_log", None)
    if rep.failed and mark is not None:
        c, offset = mark
        text = c.log()[offset:]
        if not c.running:
            text += "\n*** the server process is no longer running ***"
        rep.sections.append(("kubeling server log during this test", text[-20000:]))


@pytest.fixture(params=KUBECTL_VERSIONS, ids=lambda v: f"kubectl{v}")
def kubectl_version(request) -> str:
    try:
        harness.kubectl_binary(request.param)
    except harness.ClientMissing as e:
        pytest.fail(str(e), pytrace=False)
    return request.param


@pytest.fixture
def kubectl(cluster, kubectl_version) -> harness.Kubectl:
    return harness.Kubectl(cluster, kubectl_version)


@pytest.fixture
def helm(cluster):
    try:
        harness.helm_binary()
    except harness.ClientMissing as e:
        pytest.fail(str(e), pytrace=False)
    return cluster.helm


@pytest.fixture
def namespace(cluster, request) -> str:
    if not cluster.running:
        pytest.fail("the shared kubeling server is not running\n" + cluster.log_tail(),
                    pytrace=False)
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    # `create -f` sends JSON; `create namespace` would send protobuf, which is under test elsewhere.
    cluster.kubectl("create", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    yield name
    if cluster.running:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


# -- multi-node (tests/e2e/multinode.py) --------------------------------------------------------

@pytest.fixture(scope="session")
def multinode_cluster(tmp_path_factory, images_dir):
    """Three nodes made by ``kubeling cluster up`` inside a namespace of the test's, with the
    seeded registry on the bridge (tests/e2e/multinode.py). Shared: tests that break a node mend
    it before they end (or make a private `MultiNodeCluster`); each works in its own namespace."""
    import multinode
    with multinode.running(tmp_path_factory.mktemp("multinode"), images_dir=images_dir, nodes=3) as c:
        yield c


@pytest.fixture
def multinode_namespace(multinode_cluster, request) -> str:
    """A fresh namespace in `multinode_cluster` with its ``default`` ServiceAccount in place."""
    import multinode
    name = multinode.namespace_name(request.node.name, uuid.uuid4().hex[:5])
    multinode_cluster.kubectl("create", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    harness.eventually(lambda: multinode_cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                                                         check=False).returncode == 0, timeout=30,
                       what=f"the default ServiceAccount in {name}")
    yield name
    if multinode_cluster.running:
        multinode_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
