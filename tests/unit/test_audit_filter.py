"""The audit filter (in process) and the log backend's writer and rotation."""

import asyncio
import os
import time

import orjson

from inprocess import api_server, default_service_accounts, http
from kubeling.apiserver.audit import Auditor, LogBackend
from kubeling.apiserver.audit.log import RotatingFile
from kubeling.apiserver.audit.policy import parse

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "b"}}


class Events:
    def __init__(self):
        self.events = []

    def process(self, ev):
        self.events.append(orjson.loads(orjson.dumps(ev)))


def auditor(*rules, **top):
    return Auditor(parse({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": list(rules), **top}), Events())


def test_events_per_stage_with_objects_and_annotations():
    async def go():
        api = await api_server()
        api.auditor = a = auditor({"level": "None", "nonResourceURLs": ["/healthz*"]},
                                  {"level": "RequestResponse", "resources": [{"group": "", "resources": ["configmaps"]}]},
                                  {"level": "Metadata"})
        async with http(api) as c:
            r = await c.post("/api/v1/namespaces/default/configmaps", json=CM, headers={"User-Agent": "t/1"})
            assert r.status == 201
            audit_id = r.headers["Audit-Id"]
            evs = a.backend.events
            assert [e["stage"] for e in evs] == ["RequestReceived", "ResponseComplete"]
            done = evs[1]
            assert {e["auditID"] for e in evs} == {audit_id}
            assert done["kind"] == "Event" and done["apiVersion"] == "audit.k8s.io/v1"
            assert done["level"] == "RequestResponse" and done["verb"] == "create"
            assert done["user"]["username"] == "system:admin"
            assert done["userAgent"] == "t/1" and done["sourceIPs"] == ["127.0.0.1"]
            assert done["requestURI"] == "/api/v1/namespaces/default/configmaps"
            assert done["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": "c1",
                                         "apiVersion": "v1"}
            assert done["responseStatus"] == {"metadata": {}, "code": 201}
            assert done["requestObject"]["data"] == {"a": "b"}
            assert done["responseObject"]["metadata"]["uid"]
            assert done["annotations"] == {"authorization.k8s.io/decision": "allow",
                                           "authorization.k8s.io/reason": ""}
            assert "requestObject" not in evs[0] and "responseStatus" not in evs[0]
            assert done["requestReceivedTimestamp"].endswith("Z") and len(done["stageTimestamp"]) == 27
            evs.clear()
            # health checks: level None, yet the Audit-Id header is there
            r = await c.get("/healthz", headers={"Audit-ID": "mine"})
            assert r.headers["Audit-Id"] == "mine" and evs == []
            # an impersonated, refused request: Metadata level, the 403 Status, both users
            r = await c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "bob"})
            assert r.status == 403
            done = evs[-1]
            assert done["level"] == "Metadata" and done["verb"] == "list"
            assert done["user"]["username"] == "system:admin" and done["impersonatedUser"]["username"] == "bob"
            assert done["responseStatus"]["code"] == 403 and done["responseStatus"]["reason"] == "Forbidden"
            assert 'User "bob" cannot list' in done["responseStatus"]["message"]
            assert done["annotations"]["authorization.k8s.io/decision"] == "forbid"
            assert "requestObject" not in done and "responseObject" not in done
    asyncio.run(go())


def test_watch_has_response_started_and_omit_stages():
    async def go():
        api = await api_server()
        api.auditor = a = auditor({"level": "Metadata", "resources": [{"group": "", "resources": ["configmaps"]}]},
                                  omitStages=["RequestReceived"])
        async with http(api) as c:
            r = await c.get("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1")
            assert r.status == 200
            await r.read()
            stages = [(e["stage"], e["verb"], e["responseStatus"]["code"]) for e in a.backend.events]
            assert stages == [("ResponseStarted", "watch", 200), ("ResponseComplete", "watch", 200)]
    asyncio.run(go())


def test_log_backend_writes_lines_from_a_thread(tmp_path):
    path = tmp_path / "audit.log"
    b = LogBackend(str(path))
    for i in range(100):
        b.process({"n": i})
    b.close()
    lines = path.read_text().splitlines()
    assert [orjson.loads(x)["n"] for x in lines] == list(range(100))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_rotation_by_size_keeps_maxbackup_and_drops_old(tmp_path):
    path = tmp_path / "audit.log"
    now = [time.time()]
    f = RotatingFile(path, max_size_mb=1, max_backups=2, clock=lambda: now[0])
    line = b"x" * (300 * 1024) + b"\n"
    for _ in range(12):         # ~3.6 MB: 3 per file
        f.write(line)
        now[0] += 1
    f.close()
    backups = f.backups()
    assert len(backups) == 2
    assert all(b.name.startswith("audit-") and b.name.endswith(".log") for b in backups)
    assert path.stat().st_size <= 1024 * 1024
    # maxage: backups older than the limit go at the next rotation
    g = RotatingFile(path, max_size_mb=1, max_age_days=1, clock=lambda: now[0] + 3 * 86400)
    g.rotate()
    g.close()
    assert len(g.backups()) == 1     # only the one just made


def test_panic_stage_for_an_unexpected_failure():
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    a = auditor({"level": "Request"})

    async def boom(request):
        raise RuntimeError("kaboom")

    async def go():
        app = web.Application(middlewares=[a.middleware()])
        a.install(app)
        app.router.add_get("/x", boom)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            r = await client.get("/x")
            assert r.status == 500
        finally:
            await client.close()
        stages = [(e["stage"], e.get("responseStatus", {}).get("code")) for e in a.backend.events]
        assert stages == [("RequestReceived", None), ("Panic", 500)]
        assert "kaboom" in a.backend.events[-1]["responseStatus"]["message"]
    asyncio.run(go())


def test_a_slow_disk_does_not_hold_the_caller(tmp_path):
    b = LogBackend(str(tmp_path / "audit.log"))
    real = b.out.write

    def slow(data):
        time.sleep(0.01)
        real(data)
    b.out.write = slow
    t = time.monotonic()
    for i in range(100):
        b.process({"n": i})
    assert time.monotonic() - t < 0.3       # 100 events would take a second written inline
    b.close(timeout=30)
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 100


def test_omit_managed_fields():
    async def go():
        api = await api_server()
        api.auditor = a = auditor({"level": "RequestResponse", "resources": [{"group": "", "resources": ["configmaps"]}]},
                                  omitManagedFields=True)
        async with http(api) as c:
            r = await c.post("/api/v1/namespaces/default/configmaps?fieldManager=me", json=CM)
            assert r.status == 201
            assert (await r.json())["metadata"]["managedFields"]
            done = a.backend.events[-1]
            assert done["responseObject"]["metadata"]["name"] == "c1"
            assert "managedFields" not in done["responseObject"]["metadata"]
            r = await c.get("/api/v1/namespaces/default/configmaps")
            listed = a.backend.events[-1]["responseObject"]
            assert listed["kind"] == "ConfigMapList" and all("managedFields" not in i["metadata"]
                                                             for i in listed["items"])
    asyncio.run(go())


def test_admission_annotations_reach_the_event():
    """PodSecurity's audit annotations (registry Context.audit_annotations) are in the event."""
    async def go():
        api = await api_server()
        api.auditor = a = auditor({"level": "Metadata", "resources": [{"group": "", "resources": ["pods"]}]})
        async with http(api) as c:
            r = await c.post("/api/v1/namespaces", json={
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "psa-audit", "labels": {"pod-security.kubernetes.io/audit": "restricted"}}})
            assert r.status == 201
            await default_service_accounts(api, ["psa-audit"])
            await asyncio.sleep(0.2)
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"automountServiceAccountToken": False,
                            "containers": [{"name": "c", "image": "busybox",
                                            "securityContext": {"privileged": True}}]}}
            r = await c.post("/api/v1/namespaces/psa-audit/pods?dryRun=All", json=pod)
            assert r.status == 201, await r.text()
            done = a.backend.events[-1]
            assert done["stage"] == "ResponseComplete"
            assert "privileged" in done["annotations"].get("pod-security.kubernetes.io/audit-violations", ""), \
                done["annotations"]
    asyncio.run(go())
