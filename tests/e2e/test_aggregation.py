"""APIServices (issue 5): local ones for every built-in group version, an extension API server's
with an Available condition that says why it cannot be reached, and 503 for its group; the
service and node proxy paths routed to their resources. Real kubectl, a private server (an
unavailable aggregated group would show in every other test's discovery)."""

from __future__ import annotations

import json
import time

import pytest

import harness

METRICS = """apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service:
    namespace: kube-system
    name: metrics-server
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = harness.Cluster(tmp_path_factory.mktemp("aggregation"), extra_args=("--controllers", "", "--disable-scheduler"))
    try:
        c.start()
    except harness.ServerNotReady as e:
        pytest.fail(str(e), pytrace=False)
    yield c
    c.stop()


def _available(cluster, name: str) -> dict:
    obj = json.loads(cluster.kubectl("get", "apiservice", name, "-o", "json").stdout)
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Available"), {})


def test_local_apiservices_are_registered_and_available(cluster):
    out = cluster.kubectl("get", "apiservices").stdout
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    by_name = {r.split()[0]: r.split()[1:3] for r in rows}
    for name in ("v1.", "v1.apps", "v2.autoscaling", "v1.apiextensions.k8s.io"):
        assert by_name[name] == ["Local", "True"], out


def test_an_unreachable_extension_api_is_reported_and_answers_503(cluster):
    cluster.kubectl("apply", "-f", "-", input=METRICS)
    deadline = time.monotonic() + 20
    while _available(cluster, "v1beta1.metrics.k8s.io").get("reason") != "ServiceNotFound":
        assert time.monotonic() < deadline, _available(cluster, "v1beta1.metrics.k8s.io")
        time.sleep(0.2)
    cond = _available(cluster, "v1beta1.metrics.k8s.io")
    assert cond["status"] == "False" and cond["message"] == 'service/metrics-server in "kube-system" is not present'
    row = cluster.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "--no-headers").stdout.split()
    assert row[1:4] == ["kube-system/metrics-server", "False", "(ServiceNotFound)"]
    raw = cluster.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False)
    assert raw.returncode != 0 and ("ServiceUnavailable" in raw.stderr or "unable to handle" in raw.stderr), raw.stderr
    status, body = cluster.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 503 and json.loads(body)["reason"] == "ServiceUnavailable"
    cluster.kubectl("delete", "apiservice", "v1beta1.metrics.k8s.io")
    status, _ = cluster.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 404


@pytest.mark.parametrize("path, code, text", [
    # reaching endpoints is tested in test_net_apiproxy.py (issue 8); here, that the path routes
    pytest.param("/api/v1/namespaces/default/services/kubernetes:444/proxy/", 503,
                 'no service port 444 found for service "kubernetes"', id="service"),
    pytest.param("/api/v1/namespaces/default/services/https:missing:443/proxy/healthz", 404,
                 'services "missing" not found', id="service-scheme"),
    pytest.param("/api/v1/nodes/n1/proxy/metrics", 404, 'nodes "n1" not found', id="node"),
])
def test_proxy_paths_reach_their_resource(cluster, path, code, text):
    status, body = cluster.request("GET", path)
    assert status == code and text in json.loads(body)["message"], body
