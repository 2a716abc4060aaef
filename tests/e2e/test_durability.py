"""Acceptance 5: durability of the SQLite store behind the API server.

Each test runs its own server (`make_cluster`), because they restart, SIGKILL or compact it:
- objects and their resourceVersions survive a clean restart, byte for byte;
- SIGKILL during 1,000 concurrent creates loses no create the server acknowledged: a separate
  writer process prints each acknowledged name (flushed) and the test checks every one exists
  after a restart;
- a watch from an old revision replays what it missed (across a restart); once that revision is
  compacted the watch gets a 410 ``Expired`` ERROR event, and a list continue token made at a
  compacted revision gets 410.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from harness import eventually

# The writer: 1,000 ConfigMap creates over aiohttp with the kubeconfig's client certificate,
# IN_FLIGHT at a time. It prints a name only once the server answered 201 (acknowledged), and
# flushes, so that the parent sees every acknowledgement even if the server dies a moment later.
WRITER = r'''
import asyncio, base64, json, os, ssl, sys, tempfile
import aiohttp, yaml

kubeconfig, ns, count, in_flight = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = yaml.safe_load(open(kubeconfig))
cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
d = tempfile.mkdtemp()
open(os.path.join(d, "c"), "wb").write(base64.b64decode(user["client-certificate-data"]))
open(os.path.join(d, "k"), "wb").write(base64.b64decode(user["client-key-data"]))
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
ctx.load_cert_chain(os.path.join(d, "c"), os.path.join(d, "k"))
url = cluster["server"] + f"/api/v1/namespaces/{ns}/configmaps"

async def main():
    sem = asyncio.Semaphore(in_flight)
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=in_flight),
                                     timeout=aiohttp.ClientTimeout(total=10)) as s:
        async def one(i):
            nonlocal failed
            name = f"w-{i:04d}"
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                    "data": {"i": str(i)}}
            async with sem:
                try:
                    async with s.post(url, json=body) as r:
                        await r.read()
                        if r.status == 201:
                            sys.stdout.write(name + "\n")
                            sys.stdout.flush()
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                failed += 1
        await asyncio.gather(*(one(i) for i in range(count)))
    sys.stderr.write(f"writer done, {failed} failed\n")

asyncio.run(main())
'''


def configmap_names(cluster, ns: str) -> set[str]:
    status, body = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert status == 200, body
    return {i["metadata"]["name"] for i in json.loads(body)["items"]}


def create_namespace(cluster, name: str) -> None:
    status, body = cluster.request("POST", "/api/v1/namespaces",
                                   json.dumps({"metadata": {"name": name}}).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 201, body


def server_children(cluster) -> list[int]:
    """Pids of the server's child processes (the controller manager runs as one)."""
    pid = cluster.proc.pid
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def still_running(pids: list[int], marker: str) -> list[int]:
    """Those of ``pids`` still alive and still ours (their command line names ``marker``)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    alive.append(pid)
        except OSError:
            pass
    return alive


def get_json(cluster, path: str) -> dict:
    status, body = cluster.request("GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


# -- restart ----------------------------------------------------------------------------------

def test_objects_and_resource_versions_survive_restart(make_cluster):
    c = make_cluster()
    api = c.python_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    create_namespace(c, "keep")
    core.create_namespaced_config_map("keep", client.V1ConfigMap(metadata={"name": "cm"}, data={"a": "1"}))
    core.patch_namespaced_config_map("cm", "keep", {"data": {"a": "2"}})
    core.create_namespaced_secret("keep", client.V1Secret(metadata={"name": "s"}, string_data={"k": "v"}))
    core.create_namespaced_service("keep", client.V1Service(
        metadata={"name": "svc"}, spec={"ports": [{"port": 80}], "selector": {"app": "x"}}))
    rbac.create_namespaced_role("keep", client.V1Role(
        metadata={"name": "r"}, rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))
    core.create_namespaced_config_map("keep", client.V1ConfigMap(metadata={"name": "gone"}))
    core.delete_namespaced_config_map("gone", "keep")
    api.close()

    paths = ["/api/v1/namespaces/keep/configmaps/cm", "/api/v1/namespaces/keep/secrets/s",
             "/api/v1/namespaces/keep/services/svc",
             "/apis/rbac.authorization.k8s.io/v1/namespaces/keep/roles/r",
             "/api/v1/namespaces/keep"]
    before = {p: get_json(c, p) for p in paths}
    list_rv = int(get_json(c, "/api/v1/configmaps")["metadata"]["resourceVersion"])

    c.restart()

    after = {p: get_json(c, p) for p in paths}
    for p in paths:
        assert after[p] == before[p], f"{p} changed across restart"
    assert c.request("GET", "/api/v1/namespaces/keep/configmaps/gone")[0] == 404
    assert int(get_json(c, "/api/v1/configmaps")["metadata"]["resourceVersion"]) >= list_rv
    # New writes continue the revision sequence instead of reusing old numbers.
    status, body = c.request("POST", "/api/v1/namespaces/keep/configmaps",
                             json.dumps({"metadata": {"name": "new"}}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 201, body
    assert int(json.loads(body)["metadata"]["resourceVersion"]) > list_rv


# -- kill -9 during concurrent writes --------------------------------------------------------

def test_sigkill_during_concurrent_writes_loses_no_acknowledged_write(make_cluster):
    c = make_cluster()
    create_namespace(c, "crash")
    total, in_flight, kill_after = 1000, 32, 300
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(c.kubeconfig), "crash",
                               str(total), str(in_flight)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[str] = []
    reached = threading.Event()

    def read() -> None:
        for line in writer.stdout:
            acked.append(line.strip())
            if len(acked) >= kill_after:
                reached.set()
        reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    children = server_children(c)
    try:
        assert reached.wait(120), "the writer never got going: " + writer.stderr.read()
        c.kill9()
        killed_at = len(acked)
        writer.wait(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    reader.join(timeout=10)
    stderr = writer.stderr.read()
    assert writer.returncode == 0, stderr
    assert kill_after <= killed_at < total, f"the kill did not land mid-run ({killed_at} acked)"

    c.start()
    present = configmap_names(c, "crash")
    lost = sorted(set(acked) - present)
    assert not lost, (f"{len(lost)} of {len(acked)} acknowledged creates lost after SIGKILL "
                      f"(acked before the kill: {killed_at}, present: {len(present)}): {lost[:20]}")
    # Every present write object is complete (no torn writes), whether acknowledged or not.
    items = get_json(c, "/api/v1/namespaces/crash/configmaps")["items"]
    for cm in items:
        if cm["metadata"]["name"].startswith("w-"):
            assert cm["data"] == {"i": str(int(cm["metadata"]["name"][2:]))}
    print(f"acked={len(acked)} acked_before_kill={killed_at} present={len(present)} "
          f"attempted={total}")

    # A crashed server must not leave its children behind: an orphaned controller manager
    # would keep running against the restarted server, next to the new one.
    marker = str(c.kubeconfig)
    try:
        orphans = still_running(children, marker)
        deadline = time.monotonic() + 10
        while orphans and time.monotonic() < deadline:
            time.sleep(0.2)
            orphans = still_running(orphans, marker)
        assert not orphans, (f"children {orphans} of the SIGKILLed server are still running "
                             f"10 s later (ppid now 1); they were started with {marker}")
    finally:
        for pid in still_running(children, marker):
            os.kill(pid, signal.SIGKILL)  # started by this test's server: ours to clean up


# -- watch from an old revision, and compaction -----------------------------------------------

def _raw_watch(c, path: str, rv: str, timeout: int = 3) -> list[dict]:
    status, body = c.request("GET", f"{path}?watch=1&resourceVersion={rv}&timeoutSeconds={timeout}",
                             timeout=timeout + 10)
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_watch_resumed_from_old_revision_gets_missed_events(make_cluster):
    c = make_cluster()
    api = c.python_client()
    core = client.CoreV1Api(api)
    create_namespace(c, "resume")
    core.create_namespaced_config_map("resume", client.V1ConfigMap(metadata={"name": "old"}))
    rv0 = core.list_namespaced_config_map("resume").metadata.resource_version
    core.create_namespaced_config_map("resume", client.V1ConfigMap(metadata={"name": "a"}, data={"n": "1"}))
    core.patch_namespaced_config_map("a", "resume", {"data": {"n": "2"}})
    api.close()
    c.restart()  # the missed history must come from disk, not from an in-memory buffer
    api = c.python_client()
    core = client.CoreV1Api(api)
    core.delete_namespaced_config_map("a", "resume")
    core.patch_namespaced_config_map("old", "resume", {"data": {"x": "y"}})

    # Only our objects: controllers (the root CA publisher) may write into the namespace too.
    mine = {"a", "old"}
    events = _raw_watch(c, "/api/v1/namespaces/resume/configmaps", rv0)
    got = [(e["type"], e["object"]["metadata"]["name"]) for e in events
           if e["type"] != "BOOKMARK" and e["object"]["metadata"]["name"] in mine]
    assert got == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("MODIFIED", "old")]
    # The same through the Python client's Watch.
    w = watch.Watch()
    seen = [(e["type"], e["object"].metadata.name)
            for e in w.stream(core.list_namespaced_config_map, "resume", resource_version=rv0,
                              timeout_seconds=3)
            if e["object"].metadata.name in mine]
    assert seen == got
    api.close()


def test_compacted_revision_gives_410_for_watch_and_continue(make_cluster):
    c = make_cluster(extra_args=("--compact-interval", "1", "--compact-keep", "5"))
    api = c.python_client()
    core = client.CoreV1Api(api)
    create_namespace(c, "compact")
    for i in range(3):
        core.create_namespaced_config_map("compact", client.V1ConfigMap(metadata={"name": f"c{i}"}))
    first = core.list_namespaced_config_map("compact", limit=1)
    rv0, token = first.metadata.resource_version, first.metadata._continue
    assert token
    for i in range(30):
        core.patch_namespaced_config_map("c0", "compact", {"data": {"i": str(i)}})

    def expired_event():
        events = _raw_watch(c, "/api/v1/namespaces/compact/configmaps", rv0, timeout=1)
        return events if events and events[0]["type"] == "ERROR" else None

    events = eventually(expired_event, timeout=20, what=f"watch from {rv0} expires")
    assert len(events) == 1, events
    st = events[0]["object"]
    assert (st["kind"], st["status"], st["code"], st["reason"]) == ("Status", "Failure", 410, "Expired")
    assert st["message"].startswith(f"too old resource version: {rv0} ("), st["message"]

    w = watch.Watch()
    try:
        list(w.stream(core.list_namespaced_config_map, "compact", resource_version=rv0,
                      timeout_seconds=3))
        raise AssertionError("a watch from a compacted revision must fail")
    except ApiException as e:
        assert e.status == 410, e

    try:
        core.list_namespaced_config_map("compact", limit=1, _continue=token)
        raise AssertionError("a list continuing a compacted snapshot must fail")
    except ApiException as e:
        st = json.loads(e.body)
        assert e.status == 410 and st["reason"] == "Expired", st
        assert "continue parameter is too old" in st["message"], st["message"]
    api.close()

