"""The e2e harness's datastore switch (issue 11, acceptance 1: the API suite runs on etcd too).

``make test`` runs the suite on SQLite and ``make test-etcd`` runs the API machinery's files again
with ``KUBELING_TEST_DATASTORE=etcd``. These tests keep that parametrization honest:
- the shared server really runs on the datastore the environment names (on etcd, the object a
  test writes is under ``/registry/core/configmaps/<ns>/<name>`` in that server's own etcd, read with
  etcdctl, and there is no state.db; on SQLite there is no etcd and the state.db exists);
- a Cluster on etcd: `restart()` and `kill9()` touch only the server, so its etcd and the data
  outlive them; `stop()` stops both; the next `start()` brings both back with the data.
"""

from __future__ import annotations

import json
import os
import subprocess

import harness


def etcdctl_get(cluster: harness.Cluster, key: str) -> str:
    proc = subprocess.run(["etcdctl", "--endpoints", cluster.etcd.endpoint, "get", key, "--print-value-only"],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def create_configmap(cluster: harness.Cluster, ns: str, name: str) -> None:
    cluster.kubectl("create", "configmap", name, "-n", ns, "--from-literal=k=v")


def test_shared_cluster_runs_on_the_datastore_the_environment_names(cluster, namespace):
    create_configmap(cluster, namespace, "where")
    started = [ln for ln in cluster.log().splitlines() if ln.startswith("=== harness: starting")][-1]
    state_db = cluster.data_dir / "state.db"
    if harness.datastore_from_env() == "etcd":
        assert cluster.datastore == "etcd" and cluster.etcd is not None
        assert f"--datastore-endpoint {cluster.etcd.endpoint}" in started, started
        stored = json.loads(etcdctl_get(cluster, f"/registry/core/configmaps/{namespace}/where"))
        assert (stored["kind"], stored["metadata"]["name"], stored["data"]) == ("ConfigMap", "where", {"k": "v"})
        assert not state_db.exists()
    else:
        assert cluster.datastore == "sqlite" and cluster.etcd is None
        assert "--datastore-endpoint" not in started, started
        assert state_db.exists()


def test_etcd_cluster_lifecycle_kill9_and_restart_touch_only_the_server(make_cluster):
    c = make_cluster(datastore="etcd", extra_args=("--controllers", "", "--disable-scheduler"))
    member = c.etcd.members[0]
    etcd_pid = member.proc.pid
    create_configmap(c, "default", "before")

    c.restart()
    assert member.running and member.proc.pid == etcd_pid
    create_configmap(c, "default", "after-restart")

    c.kill9()
    assert not c.running
    assert member.running and member.proc.pid == etcd_pid
    assert json.loads(etcdctl_get(c, "/registry/core/configmaps/default/after-restart"))["data"] == {"k": "v"}

    c.start()
    c.stop()
    assert not c.running and not member.running

    c.start()   # etcd again, on its data: every object is there
    assert member.running and member.proc.pid != etcd_pid
    names = c.kubectl("get", "configmaps", "-n", "default", "-o", "name").stdout.split()
    assert {"configmap/before", "configmap/after-restart"} <= set(names), names
