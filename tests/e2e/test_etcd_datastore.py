"""`kubeling server --datastore-endpoint`: the API server on a real etcd (Debian's etcd-server,
one member on loopback), judged by kubectl and etcdctl.

- kubectl create/get/apply/delete and a watch work;
- ``etcdctl get --prefix /registry/ --keys-only`` shows the objects under
  ``/registry/<group>/<resource>/<namespace>/<name>``, values are JSON, and no state.db is made;
- with etcd stopped, ``/readyz`` fails naming ``etcd`` and a write answers 503/504 with a
  Status; once etcd is back, the same server heals (readyz, writes, watches) without a restart.
"""

from __future__ import annotations

import json
import os
import subprocess

import harness
import pytest
from tests.support.etcd import EtcdCluster

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx:1.27}}]
"""


@pytest.fixture(scope="module")
def on_etcd(tmp_path_factory):
    base = tmp_path_factory.mktemp("etcd-datastore")
    etcd = EtcdCluster(base / "etcd").start()
    cluster = harness.Cluster(base / "server", extra_args=tuple(etcd.datastore_args()))
    try:
        cluster.start()
        yield etcd, cluster
    finally:
        cluster.stop()
        etcd.stop()


def etcdctl(etcd: EtcdCluster, *args: str) -> str:
    return subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, *args], capture_output=True, text=True,
                          check=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}).stdout


def test_kubectl_create_get_apply_delete_and_watch(on_etcd):
    _, c = on_etcd
    c.kubectl("create", "configmap", "sentinel")
    watch = c.kubectl_stream("get", "configmaps", "-n", "default", "--watch", "--output-watch-events",
                             "-o", "custom-columns=EVENT:.type,NAME:.object.metadata.name,"
                             "VALUE:.object.data.a")
    try:
        watch.wait_for(r"ADDED\s+sentinel")  # listed: the watch goes on from the list's revision
        c.kubectl("create", "configmap", "cm1", "--from-literal=a=1")
        assert c.kubectl("get", "configmap", "cm1", "-o", "jsonpath={.data.a}").stdout == "1"
        c.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "namespace": "default"},
            "data": {"a": "2"}}))
        c.kubectl("delete", "configmap", "cm1")
        watch.wait_for(r"ADDED\s+cm1\s+1")
        watch.wait_for(r"MODIFIED\s+cm1\s+2")
        watch.wait_for(r"DELETED\s+cm1")
    finally:
        watch.close()
    c.kubectl("apply", "-f", "-", input=DEPLOYMENT.format(replicas=1))
    c.kubectl("apply", "-f", "-", input=DEPLOYMENT.format(replicas=3))
    assert c.kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    out = c.kubectl("get", "configmap", "cm1", check=False)
    assert out.returncode != 0 and "NotFound" in out.stderr


def test_etcdctl_shows_the_registry_layout(on_etcd):
    etcd, c = on_etcd
    c.kubectl("create", "configmap", "x", "--from-literal=k=v")
    c.kubectl("apply", "-f", "-", input=DEPLOYMENT.format(replicas=1))
    keys = etcdctl(etcd, "get", "--prefix", "/registry/", "--keys-only").split()
    assert "/registry/core/configmaps/default/x" in keys
    assert "/registry/apps/deployments/default/web" in keys
    assert "/registry/core/namespaces/kube-system" in keys
    value = json.loads(etcdctl(etcd, "get", "/registry/core/configmaps/default/x", "--print-value-only"))
    assert value["kind"] == "ConfigMap" and value["data"] == {"k": "v"}
    rv = c.kubectl("get", "configmap", "x", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    status = json.loads(etcdctl(etcd, "get", "/registry/core/configmaps/default/x", "-w", "json"))
    assert int(rv) == status["kvs"][0]["mod_revision"]  # the resourceVersion is etcd's revision
    assert not (c.data_dir / "state.db").exists()


def test_etcd_outage_readyz_and_503_then_heals(on_etcd):
    etcd, c = on_etcd
    c.kubectl("create", "configmap", "before-outage", "--from-literal=a=1")
    watch = c.kubectl_stream("get", "configmaps", "-n", "default", "--watch", "--output-watch-events",
                             "-o", "custom-columns=EVENT:.type,NAME:.object.metadata.name")
    try:
        watch.wait_for(r"ADDED\s+before-outage")
        etcd.stop()

        def readyz_fails():
            status, body = c.request("GET", "/readyz?verbose", timeout=10)
            return status != 200 and "[-]etcd failed" in body.decode()

        harness.eventually(readyz_fails, timeout=30, what="/readyz failing on etcd")
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "during-outage"}}).encode()
        status, answer = c.request("POST", "/api/v1/namespaces/default/configmaps", body,
                                   headers={"Content-Type": "application/json"}, timeout=60)
        assert status in (503, 504), (status, answer[:300])
        st = json.loads(answer)
        assert st["kind"] == "Status" and st["code"] == status and st["status"] == "Failure"
        status, answer = c.request("GET", "/api/v1/namespaces/default/configmaps/before-outage", timeout=60)
        assert status in (503, 504), (status, answer[:300])

        etcd.start()
        harness.eventually(lambda: c.request("GET", "/readyz", timeout=10)[0] == 200, timeout=60,
                           what="/readyz healthy again")
        harness.eventually(lambda: c.kubectl("create", "configmap", "after-outage", check=False).returncode == 0,
                           timeout=30, what="a write after the outage")
        watch.wait_for(r"ADDED\s+after-outage", timeout=60)
        assert c.kubectl("get", "configmap", "before-outage", "-o", "name").stdout.strip() == \
            "configmap/before-outage"
    finally:
        watch.close()
