"""Audit logging with real kubectl 1.32 (issue 9, acceptance 12), and ``--anonymous-auth=false``.

The server runs with ``--audit-policy-file`` (configmaps in ``audit-team`` at RequestResponse,
secrets at Metadata, health checks not at all, everything else at Metadata with
RequestReceived omitted) and ``--audit-log-path``. A create by bob leaves one JSON line per stage
(RequestReceived, ResponseComplete) with bob, the verb, the resource and the response code, and
the request and response objects at RequestResponse; a secret's data never reaches the log; an
impersonated request records both users; a watch has ResponseStarted; a refused token and an
anonymous request (401 with anonymous auth off) are audited; every response carries Audit-Id.

The same server also sends its events to a webhook (``--audit-webhook-config-file``, batches
sent after at most 1 s): the webhook gets ``audit.k8s.io/v1`` EventLists holding the same
events as the log.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import harness
import pytest
from aiohttp import web

from tests.support.webhookserver import WebhookServer

TOKENS = ('alicetoken,alice,1,"system:masters"\n'
          'bobtoken,bob,2,dev\n')

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: []
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
- level: None
  users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"]
- level: RequestResponse
  namespaces: ["audit-team"]
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets"]
- level: Metadata
  omitStages: ["RequestReceived"]
"""

K = "1.32"


class AuditSink(WebhookServer):
    """An HTTPS audit webhook: keeps every EventList POSTed to /audit."""

    def __init__(self) -> None:
        super().__init__({"/audit": None})
        self.lists: list[dict] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.lists.append({"content_type": request.content_type, **await request.json()})
        return web.json_response({})

    def events(self) -> list[dict]:
        return [e for body in list(self.lists) for e in body.get("items", [])]


@pytest.fixture(scope="module")
def audit_sink():
    sink = AuditSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def audit_cluster(tmp_path_factory, audit_sink):
    d = tmp_path_factory.mktemp("audit")
    (d / "tokens.csv").write_text(TOKENS)
    (d / "policy.yaml").write_text(POLICY)
    (d / "webhook.kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "audit",
        "clusters": [{"name": "sink", "cluster": {"server": audit_sink.url("/audit"),
                                                  "certificate-authority-data": audit_sink.ca_bundle}}],
        "users": [{"name": "apiserver", "user": {}}],
        "contexts": [{"name": "audit", "context": {"cluster": "sink", "user": "apiserver"}}]}))
    c = harness.started_cluster(d / "cluster", extra_args=(
                "--token-auth-file", str(d / "tokens.csv"), "--disable-scheduler", "--anonymous-auth=false",
                "--audit-policy-file", str(d / "policy.yaml"), "--audit-log-path", str(d / "audit" / "audit.log"),
                "--audit-log-maxsize", "5", "--audit-log-maxbackup", "2",
                "--audit-webhook-config-file", str(d / "webhook.kubeconfig"), "--audit-webhook-batch-max-wait", "1s"))
    c.tmp = d
    c.audit_log = d / "audit" / "audit.log"
    c.kubectl("create", "namespace", "audit-team", version=K)
    c.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob", "-n", "audit-team",
              version=K)
    yield c
    c.stop()


def as_user(c, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl with a kubeconfig whose only credential is ``token``."""
    return harness.kubectl_with(harness.user_kubeconfig(c, token, token=token), *args, version=K)


def events(c) -> list[dict]:
    return [json.loads(line) for line in c.audit_log.read_text().splitlines() if line.strip()]


def wait_events(c, pred, n: int, what: str) -> list[dict]:
    return harness.eventually(lambda: (lambda got: got if len(got) >= n else None)(
        [e for e in events(c) if pred(e)]), timeout=15, what=what)


def test_a_create_by_bob_leaves_one_line_per_stage(audit_cluster):
    c = audit_cluster
    harness.eventually(lambda: as_user(c, "bobtoken", "auth", "can-i", "create", "configmaps", "-n",
                                       "audit-team").stdout.strip() == "yes", timeout=10, what="bob's binding")
    made = as_user(c, "bobtoken", "create", "configmap", "bobs", "--from-literal=colour=blue", "-n", "audit-team")
    assert made.returncode == 0, made.stderr
    mine = wait_events(c, lambda e: e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "configmaps"
                       and e["user"]["username"] == "bob", 2, "bob's create in the audit log")
    assert [e["stage"] for e in mine] == ["RequestReceived", "ResponseComplete"]
    assert mine[0]["auditID"] == mine[1]["auditID"]
    done = mine[1]
    assert done["kind"] == "Event" and done["apiVersion"] == "audit.k8s.io/v1"
    assert done["level"] == "RequestResponse"
    assert done["user"]["groups"] == ["dev", "system:authenticated"]
    assert done["objectRef"] == {"resource": "configmaps", "namespace": "audit-team", "name": "bobs",
                                 "apiVersion": "v1"}
    assert done["responseStatus"]["code"] == 201
    assert done["requestObject"]["data"] == {"colour": "blue"}
    assert done["responseObject"]["metadata"]["name"] == "bobs"
    assert done["userAgent"].startswith("kubectl")
    assert done["sourceIPs"] == ["127.0.0.1"]
    assert done["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert done["requestReceivedTimestamp"] <= done["stageTimestamp"]
    # and a refused one: the 403 with its reason
    denied = as_user(c, "bobtoken", "delete", "configmap", "bobs", "-n", "default")
    assert denied.returncode != 0
    refused = wait_events(c, lambda e: e["verb"] == "delete" and e["user"]["username"] == "bob", 1, "bob's delete")
    assert refused[-1]["responseStatus"]["code"] == 403
    assert refused[-1]["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert refused[-1]["stage"] == "ResponseComplete" and refused[-1]["level"] == "Metadata"


def test_secret_data_stays_out_and_impersonation_is_recorded(audit_cluster):
    c = audit_cluster
    got = c.kubectl("create", "secret", "generic", "s1", "--from-literal=password=hunter2-audit", "-n",
                    "audit-team", "--as=bob", version=K, check=False)
    assert got.returncode == 0, got.stderr
    evs = wait_events(c, lambda e: e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "secrets"
                      and e.get("impersonatedUser", {}).get("username") == "bob", 1, "the impersonated create")
    done = [e for e in evs if e["stage"] == "ResponseComplete"][-1]
    assert done["level"] == "Metadata" and "requestObject" not in done and "responseObject" not in done
    assert "system:masters" in done["user"]["groups"]          # the admin who impersonated
    assert done["impersonatedUser"]["groups"] == ["system:authenticated"]
    assert done["responseStatus"]["code"] == 201
    text = c.audit_log.read_text()
    assert "hunter2-audit" not in text and "aHVudGVyMi1hdWRpdA" not in text


def test_watch_has_response_started(audit_cluster):
    c = audit_cluster
    c.kubectl("get", "pods", "-n", "audit-team", "--watch", "--request-timeout=2s", version=K, check=False)
    evs = wait_events(c, lambda e: e["verb"] == "watch" and e.get("objectRef", {}).get("resource") == "pods", 2,
                      "the watch's events")
    stages = [e["stage"] for e in evs if e["auditID"] == evs[0]["auditID"]]
    assert stages == ["ResponseStarted", "ResponseComplete"]     # RequestReceived omitted by the rule


def test_unauthenticated_requests_are_401_and_audited(audit_cluster):
    c = audit_cluster
    ctx = ssl.create_default_context(cafile=str(c.data_dir / "pki" / "ca.crt"))

    def get(path, token=None):
        req = urllib.request.Request(c.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    for path in ("/version", "/healthz", "/api/v1/namespaces"):
        code, headers = get(path)
        assert code == 401, path
        assert headers.get("Audit-Id")
    code, headers = get("/api/v1/namespaces", "not-a-token")
    assert code == 401
    evs = wait_events(c, lambda e: e["auditID"] == headers["Audit-Id"], 1, "the refused token's event")
    assert evs[0]["stage"] == "ResponseStarted" and evs[0]["responseStatus"]["code"] == 401
    assert evs[0]["user"] == {}
    code, headers = get("/version", "alicetoken")
    assert code == 200 and headers.get("Audit-Id")


def test_the_webhook_gets_the_same_events_in_event_lists(audit_cluster, audit_sink):
    c = audit_cluster
    done = as_user(c, "bobtoken", "create", "configmap", "hooked", "-n", "audit-team", "--from-literal=k=v")
    assert done.returncode == 0, done.stderr

    def hooked(events):
        """The create's events: the name is known from ResponseComplete on, its auditID throughout."""
        ids = {e["auditID"] for e in events if (e.get("objectRef") or {}).get("name") == "hooked"
               and e["verb"] == "create"}
        return [e for e in events if e["auditID"] in ids]
    got = harness.eventually(lambda: (lambda h: h if len(h) >= 2 else None)(hooked(audit_sink.events())),
                             timeout=20, what="the create's events at the webhook")
    assert [e["stage"] for e in got] == ["RequestReceived", "ResponseComplete"]
    assert all(e["user"]["username"] == "bob" and e["apiVersion"] == "audit.k8s.io/v1" for e in got)
    assert got[1]["responseStatus"]["code"] == 201 and got[1]["responseObject"]["data"] == {"k": "v"}
    assert all(b["kind"] == "EventList" and b["apiVersion"] == "audit.k8s.io/v1" and
               b["content_type"] == "application/json" for b in audit_sink.lists)
    # the same events as the log's lines
    logged = {e["auditID"] + e["stage"] for e in hooked(events(c))}
    assert {e["auditID"] + e["stage"] for e in got} == logged
