"""Acceptance 6 of issue 11: snapshot an etcd-backed cluster, wipe every etcd member, restore
each from the snapshot: the cluster comes back with every object.

- `test_snapshot_wipe_restore_brings_the_cluster_back`: a kubeling server on a 3-member etcd
  (Debian's etcd, on loopback) gets a namespace, ConfigMaps, Secrets, a Deployment (and its
  ReplicaSet), a CRD and custom objects. `kubeling etcd-snapshot save` takes a snapshot while it
  runs. The server and every member stop, every member's data is wiped, `kubeling etcd-snapshot
  restore` rebuilds each member from the snapshot, etcd and the server start again: every object
  is back with the same uid and resourceVersion (read with kubectl), every etcd key is back with
  the same value and mod_revision, and new writes work and are newer than everything restored.
- `test_snapshot_restore_of_a_tls_cluster_keeps_every_key`: the same round trip for etcd alone,
  over TLS with client certificates, with keys and revisions compared directly.
- `test_scheduled_snapshots_are_taken_and_pruned`: k3s's --etcd-snapshot-schedule-cron and
  --etcd-snapshot-retention on a server over TLS.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import harness
from tests.support.etcd import EtcdCluster

NS = "snap"
GROUP = "snap.example.com"
OUR_KINDS = "configmaps,secrets,deployments.apps,replicasets.apps,widgets." + GROUP


def kubeling(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = harness.VENV_BIN / "kubeling"
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from kubeling.cli.main import main; sys.exit(main())"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def etcd_keys(etcd: EtcdCluster, prefix: str = "/", rev: int = 0) -> dict[str, tuple[int, int, str]]:
    """Every key under ``prefix`` (at ``rev``): its create_revision, mod_revision and value."""
    argv = ["etcdctl", "--endpoints", etcd.endpoint, "get", "--prefix", prefix, "-w", "json"]
    if etcd.tls:
        argv += ["--cacert", etcd.ca_file, "--cert", etcd.cert_file, "--key", etcd.key_file]
    if rev:
        argv += ["--rev", str(rev)]
    out = subprocess.run(argv, env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): (kv["create_revision"], kv["mod_revision"], kv.get("value", ""))
            for kv in kvs}


def save_snapshot(etcd: EtcdCluster, snapdir: Path, source: str = "") -> tuple[Path, int]:
    r = kubeling("etcd-snapshot", "save", "--dir", str(snapdir), "--node-name", "cp-0", *etcd.datastore_args())
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"from {source or etcd.endpoints[0]})"), r.stdout
    path = Path(r.stdout.split(" saved: ")[1].split(" (")[0])
    assert path.parent == snapdir.resolve() and path.name.startswith("on-demand-cp-0-"), r.stdout
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    revision = int(r.stdout.split("revision ")[1].split(",")[0])
    assert revision > 0, r.stdout
    return path, revision


def wipe_and_restore(etcd: EtcdCluster, snapshot: Path) -> None:
    etcd.stop()
    etcd.wipe()
    assert not any(m.data_dir.exists() for m in etcd.members)
    for i in range(len(etcd.members)):
        r = kubeling("etcd-snapshot", "restore", str(snapshot), *etcd.restore_args(i))
        assert r.returncode == 0, r.stderr
        assert (etcd.members[i].data_dir / "member" / "snap" / "db").exists()
    # a second restore into a member's (now full) data directory is refused, and changes nothing
    r = kubeling("etcd-snapshot", "restore", str(snapshot), *etcd.restore_args(0))
    assert r.returncode == 1 and "is not empty" in r.stderr, r
    etcd.start(timeout=60)


# -- the API objects ------------------------------------------------------------------------------

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]},
}


def deployment(replicas: int) -> dict:
    labels = {"app": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "busybox", "command": ["sleep", "1d"]}]}}}}


def create_objects(c: harness.Cluster) -> None:
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, CRD]
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    c.kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=60s")
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": NS},
              "data": {"i": str(i), "text": "x" * (i * 50)}} for i in range(20)]
    items += [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"secret-{i}", "namespace": NS},
               "type": "Opaque", "stringData": {"password": f"pw-{i}"}} for i in range(5)]
    items += [deployment(2)]
    items += [{"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": f"w-{i}", "namespace": NS},
               "spec": {"size": i}} for i in range(3)]
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    harness.eventually(lambda: c.kubectl("get", "replicasets", "-n", NS, "-o", "name").stdout.strip(), timeout=60,
                       what="the Deployment's ReplicaSet")
    harness.settled(lambda: json.loads(c.kubectl("get", "deployment", "web", "-n", NS, "-o", "json").stdout),
                    timeout=60)


def api_objects(c: harness.Cluster) -> dict[str, tuple[str, str]]:
    """uid and resourceVersion of every object of ours, as kubectl reads them."""
    out = {}
    items = json.loads(c.kubectl("get", OUR_KINDS, "-n", NS, "-o", "json").stdout)["items"]
    items += [json.loads(c.kubectl("get", "namespace", NS, "-o", "json").stdout),
              json.loads(c.kubectl("get", "crd", f"widgets.{GROUP}", "-o", "json").stdout)]
    for o in items:
        m = o["metadata"]
        out[f"{o['kind']}/{m['name']}"] = (m["uid"], m["resourceVersion"])
    return out


def test_snapshot_wipe_restore_brings_the_cluster_back(tmp_path):
    etcd = EtcdCluster(tmp_path / "etcd", members=3)
    snapdir = tmp_path / "snapshots"
    data_dir = tmp_path / "server"
    servers: list[harness.Cluster] = []

    def server(*extra: str) -> harness.Cluster:
        port = servers[0].port if servers else None
        # datastore="sqlite": the harness starts no etcd of its own; this one is passed in extra_args
        c = harness.Cluster(data_dir, port=port, extra_args=(*etcd.datastore_args(), *extra), datastore="sqlite")
        servers.append(c)
        return c.start()

    try:
        etcd.start(timeout=60)
        c = server()
        create_objects(c)
        # the objects as the snapshot holds them: read before and after it, the same both times
        # (a controller's late write in between would make the comparison below meaningless)
        for _ in range(5):
            before = api_objects(c)
            snapshot, revision = save_snapshot(etcd, snapdir)
            if api_objects(c) == before:
                break
            snapshot.unlink()
        else:
            raise AssertionError("the objects kept changing around every snapshot")
        assert len([k for k in before if k.startswith("ConfigMap/cm-")]) == 20
        assert len([k for k in before if k.startswith("Secret/secret-")]) == 5
        assert len([k for k in before if k.startswith("Widget/")]) == 3
        assert {"Deployment/web", f"Namespace/{NS}", f"CustomResourceDefinition/widgets.{GROUP}"} <= set(before)
        assert any(k.startswith("ReplicaSet/web-") for k in before)
        listed = kubeling("etcd-snapshot", "list", "--dir", str(snapdir))
        assert listed.returncode == 0 and snapshot.name in listed.stdout, listed
        keys = etcd_keys(etcd, "/", rev=revision)
        assert [k for k in keys if k.startswith("/registry/") and k.endswith(f"/configmaps/{NS}/cm-7")], sorted(keys)

        c.stop()
        wipe_and_restore(etcd, snapshot)

        # every key of the snapshot is back, with its revisions and value
        assert etcd_keys(etcd, "/", rev=revision) == keys

        # a server with nothing that writes our objects: every object, same uid and resourceVersion
        c = server("--controllers=", "--disable-scheduler")
        assert api_objects(c) == before
        names = c.kubectl("get", "configmaps", "-n", NS, "-o", "name").stdout.split()
        assert {f"configmap/cm-{i}" for i in range(20)} <= set(names)
        secret = json.loads(c.kubectl("get", "secret", "secret-3", "-n", NS, "-o", "json").stdout)
        assert base64.b64decode(secret["data"]["password"]) == b"pw-3"
        widget = json.loads(c.kubectl("get", f"widgets.{GROUP}", "w-2", "-n", NS, "-o", "json").stdout)
        assert widget["spec"] == {"size": 2}
        c.stop()

        # and with its controllers: new writes work, newer than everything restored
        etcd.start(timeout=60)
        c = server()
        cm = json.loads(c.kubectl("create", "configmap", "after-restore", "-n", NS, "--from-literal=a=b",
                                  "-o", "json").stdout)
        assert int(cm["metadata"]["resourceVersion"]) > max(int(rv) for _, rv in before.values())
        assert int(cm["metadata"]["resourceVersion"]) > revision
        c.kubectl("scale", "deployment", "web", "-n", NS, "--replicas=3")
        harness.eventually(
            lambda: [rs for rs in json.loads(c.kubectl("get", "replicasets", "-n", NS, "-o", "json").stdout)["items"]
                     if rs["spec"]["replicas"] == 3],
            timeout=90, what="the restored Deployment's ReplicaSet scaled to 3")
        c.kubectl("delete", "configmap", "cm-0", "-n", NS)
        assert c.kubectl("get", "configmap", "cm-0", "-n", NS, check=False).returncode != 0
    finally:
        for s in servers:
            s.stop()
        etcd.stop()


def test_snapshot_restore_of_a_tls_cluster_keeps_every_key(tmp_path):
    etcd = EtcdCluster(tmp_path / "etcd", members=3, tls=True)
    try:
        etcd.start(timeout=60)
        ctl = ["etcdctl", "--endpoints", etcd.endpoint, "--cacert", etcd.ca_file, "--cert", etcd.cert_file,
               "--key", etcd.key_file]
        env = {**os.environ, "ETCDCTL_API": "3"}
        for i in range(50):
            subprocess.run([*ctl, "put", f"/registry/things/k{i:02d}", f"value-{i}"], env=env, check=True,
                           capture_output=True, timeout=30)
        subprocess.run([*ctl, "del", "/registry/things/k13"], env=env, check=True, capture_output=True, timeout=30)
        # without the client certificate, etcd refuses: save says so and leaves no file behind
        snapdir = tmp_path / "snapshots"
        r = kubeling("etcd-snapshot", "save", "--dir", str(snapdir), "--datastore-endpoint", etcd.endpoint,
                     "--datastore-cafile", etcd.ca_file)
        assert r.returncode == 1 and "no snapshot taken" in r.stderr, r
        assert os.listdir(snapdir) == []
        keys = etcd_keys(etcd, "/registry/")
        etcd.kill9(0)  # the first endpoint is down: the snapshot comes from the next one
        snapshot, revision = save_snapshot(etcd, snapdir, source=etcd.endpoints[1])
        assert len(keys) == 49 and revision == max(mod for _, mod, _ in keys.values()) + 1  # + the delete

        wipe_and_restore(etcd, snapshot)
        assert etcd_keys(etcd, "/registry/") == keys
        r = subprocess.run([*ctl, "put", "/registry/things/new", "v"], env=env, capture_output=True, text=True,
                           timeout=30, check=True)
        assert etcd_keys(etcd, "/registry/things/new")["/registry/things/new"][1] == revision + 1
    finally:
        etcd.stop()


def etcdctl(etcd: EtcdCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, *args], env={**os.environ, "ETCDCTL_API": "3"},
                          capture_output=True, text=True, timeout=120, check=check)


def test_database_space_exceeded_then_the_documented_recovery(tmp_path):
    """The README's procedure: past --quota-backend-bytes etcd raises NOSPACE, kubeling answers
    507 and fails /readyz; delete, compact, `etcdctl defrag`, `etcdctl alarm disarm`: writes
    work again without a restart."""
    etcd = EtcdCluster(tmp_path / "etcd", members=1, quota_backend_bytes=16 << 20)
    c = harness.Cluster(tmp_path / "server", extra_args=(*etcd.datastore_args(), "--controllers=",
                                                         "--disable-scheduler"), datastore="sqlite")
    try:
        etcd.start(timeout=60)
        c.start()
        c.kubectl("create", "namespace", NS)
        blob = "x" * (700 << 10)
        status, created = 201, 0
        for i in range(200):  # 140 MiB at most; the quota is 16 MiB
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}"},
                               "data": {"blob": blob}}).encode()
            status, answer = c.request("POST", f"/api/v1/namespaces/{NS}/configmaps", body,
                                       headers={"Content-Type": "application/json"})
            if status != 201:
                break
            created += 1
        assert status == 507, (status, answer[:300])
        assert b"database space exceeded" in answer
        assert "NOSPACE" in etcdctl(etcd, "alarm", "list").stdout
        assert harness.eventually(lambda: c.request("GET", "/readyz?verbose")[0] == 500 or None, timeout=30,
                                  what="/readyz failing")
        assert b"[-]etcd" in c.request("GET", "/readyz?verbose")[1]
        # reads keep working
        assert c.request("GET", f"/api/v1/namespaces/{NS}/configmaps/big-0")[0] == 200

        # the recovery: delete what grew, compact, defragment, disarm
        for i in range(created):
            assert c.request("DELETE", f"/api/v1/namespaces/{NS}/configmaps/big-{i}")[0] == 200
        revision = json.loads(etcdctl(etcd, "endpoint", "status", "-w", "json").stdout)[0]["Status"]["header"]["revision"]
        etcdctl(etcd, "compact", str(revision), check=False)  # the servers' compactor may have done it already
        etcdctl(etcd, "defrag")
        etcdctl(etcd, "alarm", "disarm")
        assert "NOSPACE" not in etcdctl(etcd, "alarm", "list").stdout
        harness.eventually(lambda: c.request("GET", "/readyz")[0] == 200 or None, timeout=30, what="/readyz ok")
        status, answer = c.request("POST", f"/api/v1/namespaces/{NS}/configmaps", json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}, "data": {"a": "b"}}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 201, answer[:300]
    finally:
        c.stop()
        etcd.stop()


def test_etcd_auto_compaction_with_the_servers_compactor_off(tmp_path):
    """The README's alternative: etcd compacts (--auto-compaction-mode periodic), the servers run
    with --compact-interval 0 and never compact (no compact_rev_key). After etcd compacted past
    an object's revision, the API keeps working: a watch from that old resourceVersion is served
    from the watch cache (or answered 410, and the client relists), lists, writes and a restarted
    server (its cache reloaded from the compacted etcd) work."""
    etcd = EtcdCluster(tmp_path / "etcd", members=1,
                       extra_args=("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"))
    c = harness.Cluster(tmp_path / "server", extra_args=(*etcd.datastore_args(), "--compact-interval", "0",
                                                         "--controllers=", "--disable-scheduler"), datastore="sqlite")
    try:
        etcd.start(timeout=60)
        c.start()
        c.kubectl("create", "namespace", NS)
        old = json.loads(c.kubectl("create", "configmap", "first", "-n", NS, "-o", "json").stdout)
        old_rv = old["metadata"]["resourceVersion"]

        def compacted_past_old():
            c.kubectl("create", "configmap", f"more-{os.urandom(3).hex()}", "-n", NS)
            return "compacted" in etcdctl(etcd, "get", "x", "--rev", old_rv, check=False).stderr
        harness.eventually(compacted_past_old, timeout=60, interval=1, what="etcd's own compaction past the old rv")
        assert etcdctl(etcd, "get", "compact_rev_key").stdout == ""  # kubeling did not compact

        status, body = c.request("GET", f"/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion={old_rv}"
                                 "&timeoutSeconds=2")
        assert status in (200, 410), (status, body[:300])
        print(f"watch from compacted resourceVersion {old_rv}: {status}")
        if status == 200:
            events = [json.loads(line) for line in body.splitlines() if line.strip()]
            assert events and all(e["type"] in ("ADDED", "MODIFIED", "BOOKMARK") for e in events) or \
                any(e["type"] == "ERROR" and e["object"].get("code") == 410 for e in events), events[:3]
        for round in range(2):  # then again on a restarted server
            created = json.loads(c.kubectl("create", "configmap", f"after-{round}", "-n", NS, "-o", "json").stdout)
            assert int(created["metadata"]["resourceVersion"]) > int(old_rv)
            names = c.kubectl("get", "configmaps", "-n", NS, "-o", "name").stdout.split()
            assert {"configmap/first", f"configmap/after-{round}"} <= set(names)
            if round == 0:
                c.restart()  # the server only: this etcd is the test's
    finally:
        c.stop()
        etcd.stop()


def test_scheduled_snapshots_are_taken_and_pruned(tmp_path):
    """A server on etcd (TLS) with ``--etcd-snapshot-schedule-cron '@every 2s'`` and a retention of
    2 takes snapshot after snapshot, named ``etcd-snapshot-<node>-<time>``, each a whole etcd
    snapshot (its checksum holds, ``etcd-snapshot ls`` lists it), and keeps only the newest 2;
    the on-demand ones beside them are not pruned."""
    from kubeling.cli.etcd_snapshot import list_snapshots, verify_checksum

    etcd = EtcdCluster(tmp_path / "etcd", members=1, tls=True)
    snaps = tmp_path / "snaps"
    c = harness.Cluster(tmp_path / "server", extra_args=(
        *etcd.datastore_args(), "--etcd-snapshot-schedule-cron", "@every 2s", "--etcd-snapshot-retention", "2",
        "--etcd-snapshot-dir", str(snaps), "--node-name", "cp-9", "--controllers=", "--disable-scheduler"),
        datastore="sqlite")
    try:
        etcd.start(timeout=60)
        c.start()
        on_demand, _ = save_snapshot(etcd, snaps)
        c.kubectl("create", "namespace", NS)
        harness.eventually(lambda: c.log().count("scheduled etcd snapshot: Snapshot") >= 4, timeout=90,
                           interval=0.5, what="4 scheduled snapshots")
        scheduled = [s for s in list_snapshots(snaps) if s.prefix == "etcd-snapshot-cp-9"]
        assert 1 <= len(scheduled) <= 3, [s.name for s in scheduled]   # 3 only until the prune after a save
        harness.eventually(lambda: len([s for s in list_snapshots(snaps) if s.prefix == "etcd-snapshot-cp-9"]) == 2,
                           timeout=30, interval=0.2, what="2 scheduled snapshots kept")
        for s in list_snapshots(snaps):
            verify_checksum(s.path)
            assert oct(s.path.stat().st_mode & 0o777) == "0o600"
        listed = kubeling("etcd-snapshot", "ls", "--dir", str(snaps)).stdout
        assert on_demand.name in listed and listed.count("etcd-snapshot-cp-9-") >= 2, listed
        assert "Snapshot etcd-snapshot-cp-9-" in c.log() and "deleted" in c.log()   # the prune's words
        assert "scheduled etcd snapshot failed" not in c.log()
    finally:
        c.stop()
        etcd.stop()
