"""Acceptance 5 of issue 11: a SQLite cluster with 1,000 objects migrates into etcd, k3s-style.

A SQLite server (no controllers, so nothing else writes) gets 1,000 objects of several kinds from
concurrent clients: ConfigMaps, Secrets, Services (with allocated ClusterIPs), a Deployment, a
CRD and its custom objects. It stops; the same data dir starts with ``--datastore-endpoint``
against a real (empty) etcd. The server copies the SQLite state into etcd before serving: every
object is there with the same content, the order of resourceVersions is the same, every new
resourceVersion is larger than every old one (and new writes larger still), kubectl works, the
SQLite file is renamed, and the next start does not migrate again. A second test shows that an
interrupted migration is refused rather than served half, and that clearing it as the message
says lets the next start migrate.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import time

import aiohttp

import harness
from tests.support.etcd import EtcdCluster

NS = "mig"
IN_FLIGHT = 32
QUIET = ("--controllers", "", "--disable-scheduler")  # nothing but the clients writes
GROUP = "mig.example.com"
# 1,000 objects: the namespace, the CRD, the Deployment and 997 more
COUNTS = {"configmaps": 450, "secrets": 200, "services": 150, "widgets": 197}
PATHS = {
    "configmaps": f"/api/v1/namespaces/{NS}/configmaps",
    "secrets": f"/api/v1/namespaces/{NS}/secrets",
    "services": f"/api/v1/namespaces/{NS}/services",
    "deployments": f"/apis/apps/v1/namespaces/{NS}/deployments",
    "widgets": f"/apis/{GROUP}/v1/namespaces/{NS}/widgets",
}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "size": {"type": "integer"}, "color": {"type": "string"}}}}}}}]},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
}


def body_for(kind: str, i: int) -> dict:
    name = f"{kind[:-1]}-{i:04d}"
    if kind == "configmaps":
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"i": str(i % 5)}},
                "data": {"i": str(i), "text": "x" * (i % 200)}}
    if kind == "secrets":
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
                "stringData": {"password": f"s3cret-{i}"}}
    if kind == "services":
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80 + i % 10, "targetPort": 8080}]}}
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": i, "color": random.choice(["red", "green", "blue"])}}


async def create_all(cluster: harness.Cluster) -> None:
    jobs = [(PATHS[k], body_for(k, i)) for k, n in COUNTS.items() for i in range(n)]
    jobs.append((PATHS["deployments"], DEPLOYMENT))
    random.shuffle(jobs)
    connector = aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=IN_FLIGHT)
    sem = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(path: str, body: dict) -> None:
            async with sem, session.post(cluster.url + path, json=body) as r:
                assert r.status == 201, (path, r.status, await r.text())

        await asyncio.gather(*(one(p, b) for p, b in jobs))


def post(cluster: harness.Cluster, path: str, body: dict) -> dict:
    status, raw = cluster.request("POST", path, json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})
    assert status == 201, (path, status, raw[:500])
    return json.loads(raw)


def get(cluster: harness.Cluster, path: str) -> dict:
    status, raw = cluster.request("GET", path, timeout=60)
    assert status == 200, (path, status, raw[:500])
    return json.loads(raw)


def snapshot(cluster: harness.Cluster) -> dict[tuple[str, str], tuple[int, dict]]:
    """{(kind, name): (resourceVersion, object without its resourceVersion)} of the 1,000."""
    objs = [("namespaces", get(cluster, f"/api/v1/namespaces/{NS}")),
            ("customresourcedefinitions",
             get(cluster, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}"))]
    for kind, path in PATHS.items():
        objs += [(kind, o) for o in get(cluster, path)["items"]]
    out = {}
    for kind, o in objs:
        rv = int(o["metadata"].pop("resourceVersion"))
        o.pop("apiVersion", None), o.pop("kind", None)  # lists leave them out of items
        out[(kind, o["metadata"]["name"])] = (rv, o)
    return out


def migration_lines(cluster: harness.Cluster) -> list[str]:
    return re.findall(r"migration into etcd done: .*", cluster.log())


def test_sqlite_cluster_with_1000_objects_migrates_into_etcd(tmp_path):
    data = tmp_path / "server"
    # Secrets encrypted at rest: they are copied as stored, and the etcd server reads them
    source = harness.Cluster(data, extra_args=QUIET + ("--secrets-encryption",), datastore="sqlite")
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    target = None
    try:
        source.start()
        post(source, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        post(source, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        harness.eventually(lambda: source.request("GET", PATHS["widgets"])[0] == 200, timeout=60,
                           what="the Widget CRD served")
        started = time.monotonic()
        asyncio.run(create_all(source))
        print(f"\ncreated 1,000 objects on SQLite in {time.monotonic() - started:.1f} s")
        before = snapshot(source)
        assert len(before) == 1000
        source.stop()
        old_max = max(rv for rv, _ in before.values())

        etcd.start()
        target = harness.Cluster(data, port=source.port, datastore="sqlite",
                                 extra_args=QUIET + ("--secrets-encryption", *etcd.datastore_args()))
        target.start()
        lines = migration_lines(target)
        assert len(lines) == 1, target.log_tail()
        print("\n".join(re.findall(r"etcd revision raised .*", target.log()) + lines))
        assert not (data / "state.db").exists()
        assert len(list(data.glob("state.db.migrated-*"))) == 1

        after = snapshot(target)
        assert after.keys() == before.keys()
        changed = [k for k in before if before[k][1] != after[k][1]]
        assert not changed, [(k, before[k][1], after[k][1]) for k in changed[:3]]
        # the order of resourceVersions survives, and every new one is above every old one
        order = sorted(before, key=lambda k: before[k][0])
        assert sorted(after, key=lambda k: after[k][0]) == order
        assert len({rv for rv, _ in after.values()}) == 1000
        assert min(rv for rv, _ in after.values()) > old_max
        # a client resuming a watch at a SQLite-era resourceVersion is told to relist (410 Gone),
        # as after an etcd restore, rather than being replayed every migrated object
        status, raw = target.request("GET", f"{PATHS['configmaps']}?watch=1&timeoutSeconds=2&resourceVersion="
                                     f"{before[('configmaps', 'configmap-0001')][0]}")
        assert status == 410 or (status == 200 and b'"code":410' in raw.replace(b" ", b"")), (status, raw[:300])
        new = post(target, PATHS["configmaps"], {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "after-migration"}})
        assert int(new["metadata"]["resourceVersion"]) > max(rv for rv, _ in after.values())

        # the data is in etcd under /registry/, where an operator looks for it
        keys = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "get", "--prefix", "/registry/",
                               "--keys-only"], capture_output=True, text=True, timeout=60,
                              env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        assert keys.returncode == 0, keys.stderr
        assert sum(f"/{NS}/" in k for k in keys.stdout.split()) >= 998
        secret_key = next(k for k in keys.stdout.split() if k.endswith(f"/secrets/{NS}/secret-0007"))
        raw = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "get", "--print-value-only",
                              secret_key], capture_output=True, timeout=60,
                             env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}).stdout
        assert raw.startswith(b"k8s:enc:") and b"s3cret" not in raw  # still encrypted, as in SQLite

        # real clients: kubectl sees everything, Secrets decode as written
        out = target.kubectl("get", "configmaps,secrets,services,deployments,widgets", "-n", NS, "-o", "name").stdout
        assert len(out.split()) == 1000 - 2 + 1  # not the namespace and CRD; plus after-migration
        secret = json.loads(target.kubectl("get", "secret", "secret-0007", "-n", NS, "-o", "json").stdout)
        import base64
        assert base64.b64decode(secret["data"]["password"]) == b"s3cret-7"
        target.kubectl("scale", "deployment", "web", "-n", NS, "--replicas", "5")
        assert target.kubectl("get", "deployment", "web", "-n", NS, "-o",
                              "jsonpath={.spec.replicas}").stdout == "5"

        # a second start does not migrate again, and nothing moved
        snap = snapshot(target)
        target.restart()
        assert len(migration_lines(target)) == 1
        assert snapshot(target) == snap
    finally:
        if target is not None:
            target.stop()
        source.stop()
        etcd.stop()


def test_interrupted_migration_is_refused_until_cleared(tmp_path):
    data = tmp_path / "server"
    source = harness.Cluster(data, extra_args=QUIET, datastore="sqlite")
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    target = None
    try:
        source.start()
        post(source, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        post(source, PATHS["configmaps"], {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"},
                                           "data": {"k": "v"}})
        source.stop()
        etcd.start()

        def etcdctl(*args: str) -> str:
            p = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, *args], capture_output=True,
                               text=True, timeout=60, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
            assert p.returncode == 0, p.stderr
            return p.stdout

        # what a migration killed half-way leaves: its claim and part of the keys
        etcdctl("put", "/kubeling/migration", json.dumps({"state": "copying", "source": str(data / "state.db")}))
        etcdctl("put", f"/registry/namespaces/{NS}", "{}")
        target = harness.Cluster(data, port=source.port, extra_args=QUIET + tuple(etcd.datastore_args()),
                                 datastore="sqlite", startup_timeout=60)
        try:
            target.start()
            raise AssertionError("a server started on a half-migrated etcd")
        except harness.ServerNotReady:
            pass
        assert "unfinished migration" in target.log(), target.log_tail()
        assert "etcdctl" in target.log() and (data / "state.db").exists()

        # cleared as the message says, the next start migrates from the untouched SQLite file
        etcdctl("del", "--prefix", "/registry/")
        etcdctl("del", "--prefix", "/kubeling/migration")
        target.start()
        assert len(migration_lines(target)) == 1
        assert get(target, f"{PATHS['configmaps']}/kept")["data"] == {"k": "v"}
    finally:
        if target is not None:
            target.stop()
        source.stop()
        etcd.stop()
