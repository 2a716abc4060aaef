"""API semantics that clients rely on, checked over raw HTTPS against a real server.

Watch modes (initial events, sendInitialEvents with the initial-events-end bookmark, bookmarks,
timeoutSeconds, selector transitions), metadata.generation, the status/spec split, graceful pod
deletion and the namespace lifecycle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402


def call(cluster, method, path, body=None, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    status, raw = cluster.request(method, path, data, {"Content-Type": ctype} if data else {})
    return status, json.loads(raw) if raw else None


def cm(name, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": data or {"k": "v"}}


def watch_lines(cluster, path, seconds: float = 10.0):
    """Yield parsed watch events from a streaming GET until the server ends the stream."""
    req = urllib.request.Request(cluster.url + path)
    with urllib.request.urlopen(req, context=cluster.ssl_context(), timeout=seconds) as r:
        for line in r:
            if line.strip():
                yield json.loads(line)


def test_watch_without_resource_version_starts_with_current_state(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    for n in ("a", "b"):
        assert call(cluster, "POST", base, cm(n))[0] == 201
    events = list(watch_lines(cluster, base + "?watch=true&timeoutSeconds=1"))
    names = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
    assert {"a", "b"} <= set(names), events


def test_send_initial_events_ends_with_annotated_bookmark(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    assert call(cluster, "POST", base, cm("x"))[0] == 201
    events = list(watch_lines(cluster, base + "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                                             "&allowWatchBookmarks=true&timeoutSeconds=1"))
    types = [e["type"] for e in events]
    assert "ADDED" in types and types[types.index("BOOKMARK") - 1] == "ADDED", types
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= int(
        next(e for e in events if e["type"] == "ADDED")["object"]["metadata"]["resourceVersion"])


def test_send_initial_events_requires_not_older_than(cluster, namespace):
    status, st = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=true&sendInitialEvents=true")
    assert status == 422 and st["reason"] == "Invalid", st


def test_idle_watch_gets_bookmarks_and_ends_at_timeout(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/serviceaccounts"  # nothing writes here once "default" exists
    deadline = time.monotonic() + 10
    while call(cluster, "GET", f"{base}/default")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    _, lst = call(cluster, "GET", base)
    rv = lst["metadata"]["resourceVersion"]
    start = time.monotonic()
    events = list(watch_lines(cluster, base + f"?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
                                             "&timeoutSeconds=7", seconds=20))
    elapsed = time.monotonic() - start
    assert 6 <= elapsed < 15, elapsed
    assert events and all(e["type"] == "BOOKMARK" for e in events), events
    assert all(int(e["object"]["metadata"]["resourceVersion"]) >= int(rv) for e in events)


def test_label_selector_watch_sees_objects_leave_and_enter(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, created = call(cluster, "POST", base, cm("s", {"tier": "web"}))
    rv = created["metadata"]["resourceVersion"]
    for tier in ("db", "web"):
        status, _ = call(cluster, "PATCH", f"{base}/s", {"metadata": {"labels": {"tier": tier}}},
                         "application/merge-patch+json")
        assert status == 200
    events = list(watch_lines(cluster, base + f"?watch=true&resourceVersion={rv}&labelSelector=tier%3Dweb"
                                             "&timeoutSeconds=1"))
    assert [e["type"] for e in events] == ["DELETED", "ADDED"], events


def test_generation_tracks_spec_only_and_status_is_split(cluster, namespace):
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "g"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
           "status": {"replicas": 7}}
    status, obj = call(cluster, "POST", base, dep)
    # the status a client sends on the main resource is dropped (the Deployment controller writes
    # its own status meanwhile, never 7 or 9 replicas)
    assert status == 201 and obj["metadata"]["generation"] == 1 and obj["status"].get("replicas") != 7, obj
    _, obj = call(cluster, "PATCH", f"{base}/g", {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json")
    assert obj["metadata"]["generation"] == 1
    _, obj = call(cluster, "PATCH", f"{base}/g", {"spec": {"replicas": 3}, "status": {"replicas": 9}},
                  "application/merge-patch+json")
    assert obj["metadata"]["generation"] == 2 and obj["status"].get("replicas") != 9, obj
    _, obj = call(cluster, "PATCH", f"{base}/g/status", {"spec": {"replicas": 5}, "status": {"replicas": 2}},
                  "application/merge-patch+json")
    assert obj["status"]["replicas"] == 2 and obj["spec"]["replicas"] == 3
    assert obj["metadata"]["generation"] == 2


def test_noop_update_keeps_resource_version(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, obj = call(cluster, "POST", base, cm("same"))
    status, again = call(cluster, "PUT", f"{base}/same", obj)
    assert status == 200 and again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_scheduled_pod_is_deleted_gracefully(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 20,
                    "containers": [{"name": "c", "image": "busybox"}]}}
    assert call(cluster, "POST", base, pod)[0] == 201
    status, obj = call(cluster, "DELETE", f"{base}/p")
    assert status == 200 and obj["metadata"]["deletionGracePeriodSeconds"] == 20, obj
    assert obj["metadata"]["deletionTimestamp"]
    assert call(cluster, "GET", f"{base}/p")[0] == 200  # the node agent finishes the deletion
    status, _ = call(cluster, "DELETE", f"{base}/p", {"gracePeriodSeconds": 0})
    assert status == 200 and call(cluster, "GET", f"{base}/p")[0] == 404


def test_unscheduled_pod_is_deleted_at_once(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "u"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    _, created = call(cluster, "POST", base, pod)
    assert created["status"]["phase"] == "Pending" and created["spec"]["serviceAccountName"] == "default"
    assert call(cluster, "DELETE", f"{base}/u")[0] == 200
    assert call(cluster, "GET", f"{base}/u")[0] == 404


def test_terminating_namespace_refuses_new_objects_then_goes_away(cluster):
    ns = f"term-{int(time.time() * 1000) % 100000}"
    assert call(cluster, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": ns}})[0] == 201
    base = f"/api/v1/namespaces/{ns}/configmaps"
    held = cm("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    assert call(cluster, "POST", base, held)[0] == 201
    status, obj = call(cluster, "DELETE", f"/api/v1/namespaces/{ns}")
    assert status == 200 and obj["status"]["phase"] == "Terminating", obj
    status, st = call(cluster, "POST", base, cm("late"))
    assert status == 403 and "is being terminated" in st["message"], st
    status, st = call(cluster, "POST", "/api/v1/namespaces/nope-ns/configmaps", cm("x"))
    assert status == 404 and st["message"] == 'namespaces "nope-ns" not found', st
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the namespace controller reports what remains
        _, nsobj = call(cluster, "GET", f"/api/v1/namespaces/{ns}")
        conds = {c["type"]: c for c in nsobj.get("status", {}).get("conditions", [])}
        if "NamespaceContentRemaining" in conds:
            break
        time.sleep(0.2)
    assert "configmaps has 1 resource instances" in conds["NamespaceContentRemaining"]["message"], conds
    _, obj = call(cluster, "GET", f"{base}/held")
    obj["metadata"]["finalizers"] = []
    assert call(cluster, "PUT", f"{base}/held", obj)[0] == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and call(cluster, "GET", f"/api/v1/namespaces/{ns}")[0] != 404:
        time.sleep(0.2)
    assert call(cluster, "GET", f"/api/v1/namespaces/{ns}")[0] == 404


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_cannot_be_deleted(cluster, name):
    status, st = call(cluster, "DELETE", f"/api/v1/namespaces/{name}")
    assert status == 403 and st["reason"] == "Forbidden", st


def test_new_namespace_gets_default_service_account_and_root_ca(cluster, namespace):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sa, _ = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        ca, body = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt")
        if sa == 200 and ca == 200:
            break
        time.sleep(0.1)
    assert (sa, ca) == (200, 200)
    assert body["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")


def test_anonymous_and_bad_token(cluster):
    import ssl
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for path, headers, code in (("/healthz", {}, 200), ("/api", {}, 403),
                                ("/api", {"Authorization": "Bearer nope"}, 401)):
        req = urllib.request.Request(cluster.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == code, (path, headers, got)


def test_bearer_tokens_authenticate_and_authorize(make_cluster, tmp_path):
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('admintoken,alice,1,"system:masters"\nusertoken,bob,2,dev\n')
    c = make_cluster(extra_args=("--token-auth-file", str(tokens)))

    def kubectl(token, *args):
        # A kubeconfig with no client certificate: the token is the only credential.
        cfg = tmp_path / f"{token}.kubeconfig"
        cfg.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "c", "cluster": {"server": c.url,
                                                   "certificate-authority": str(c.data_dir / "pki" / "ca.crt")}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}]}))
        return subprocess.run([harness.kubectl_binary("1.33"), f"--kubeconfig={cfg}", *args],
                              capture_output=True, text=True, timeout=60)

    ok = kubectl("admintoken", "get", "ns", "default", "-o", "name")
    assert ok.returncode == 0 and ok.stdout.strip() == "namespace/default", ok.stderr
    denied = kubectl("usertoken", "get", "pods", "-n", "default")
    assert denied.returncode != 0
    assert 'User "bob" cannot list resource "pods" in API group "" in the namespace "default"' in denied.stderr
    can = kubectl("usertoken", "auth", "can-i", "create", "pods")
    assert can.stdout.strip() == "no", (can.stdout, can.stderr)
    whoami = kubectl("usertoken", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == "bob", (whoami.stdout, whoami.stderr)
    bad = kubectl("nope", "get", "ns")
    assert bad.returncode != 0 and "Unauthorized" in bad.stderr


def test_deleting_a_crd_waits_for_its_instances_finalizers(cluster):
    group = f"fin{int(time.time() * 1000) % 100000}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"gadgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    assert call(cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    base = f"/apis/{group}/v1/namespaces/default/gadgets"
    deadline = time.monotonic() + 10
    while call(cluster, "GET", base)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    held = {"apiVersion": f"{group}/v1", "kind": "Gadget",
            "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    assert call(cluster, "POST", base, held)[0] == 201
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.{group}"
    assert call(cluster, "DELETE", crd_path)[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, obj = call(cluster, "GET", f"{base}/held")
        if obj.get("metadata", {}).get("deletionTimestamp"):
            break
        time.sleep(0.1)
    assert obj["metadata"]["deletionTimestamp"], obj  # deleted through the API: its finalizer holds it
    assert call(cluster, "GET", crd_path)[0] == 200  # and the CRD waits for it
    status, _ = call(cluster, "PATCH", f"{base}/held", {"metadata": {"finalizers": None}},
                     "application/merge-patch+json")
    assert status == 200
    deadline = time.monotonic() + 15
    while call(cluster, "GET", crd_path)[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert call(cluster, "GET", crd_path)[0] == 404


@pytest.mark.parametrize("form", ["subresource", "bindings"])
def test_binding_assigns_a_node_once(cluster, namespace, form):
    base = f"/api/v1/namespaces/{namespace}/pods"
    # the test binds it itself: no scheduler may race it for the pod
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
           "spec": {"schedulerName": "no-such-scheduler", "containers": [{"name": "c", "image": "busybox"}]}}
    assert call(cluster, "POST", base, pod)[0] == 201
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    path = f"{base}/b/binding" if form == "subresource" else f"/api/v1/namespaces/{namespace}/bindings"
    status, st = call(cluster, "POST", path, binding)
    assert status == 201 and st["status"] == "Success", st
    _, obj = call(cluster, "GET", f"{base}/b")
    assert obj["spec"]["nodeName"] == "node-1"
    assert [c["type"] for c in obj["status"]["conditions"]] == ["PodScheduled"]
    status, st = call(cluster, "POST", path, {**binding, "target": {"name": "node-2"}})
    assert status == 409 and "already assigned to node" in st["message"], st
    obj["status"]["phase"] = "Running"
    status, obj = call(cluster, "PUT", f"{base}/b/status", obj)
    assert status == 200 and obj["status"]["phase"] == "Running"


def test_eviction_respects_and_charges_the_disruption_budget(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}/pods"
    for n in ("e1", "e2"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "labels": {"app": "e"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}}
        assert call(cluster, "POST", base, pod)[0] == 201
        # No agent here: the test plays the kubelet, so the pods count as healthy.
        _, obj = call(cluster, "GET", f"{base}/{n}")
        obj["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        assert call(cluster, "PUT", f"{base}/{n}/status", obj)[0] == 200
    pdbs = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "budget"},
           "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "e"}}}}
    assert call(cluster, "POST", pdbs, pdb)[0] == 201

    def budget(generation):
        st = call(cluster, "GET", f"{pdbs}/budget")[1].get("status") or {}
        return st if st.get("observedGeneration") == generation else None
    harness.eventually(lambda: budget(1), what="the disruption controller's status")
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "e1"}}
    status, st = call(cluster, "POST", f"{base}/e1/eviction", eviction)
    assert status == 429 and st["details"]["causes"][0]["reason"] == "DisruptionBudget", st
    status, _ = call(cluster, "PATCH", f"{pdbs}/budget", {"spec": {"minAvailable": 1}}, "application/merge-patch+json")
    assert status == 200
    harness.eventually(lambda: (budget(2) or {}).get("disruptionsAllowed") == 1, what="one disruption allowed")
    status, st = call(cluster, "POST", f"{base}/e1/eviction", eviction)
    assert status == 201, st
    _, obj = call(cluster, "GET", f"{base}/e1")
    assert obj["metadata"]["deletionTimestamp"]  # graceful: it is on a node
    # marked before the delete, as upstream's eviction does
    target = [c for c in obj["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert [(c["status"], c["reason"], c["message"]) for c in target] == [
        ("True", "EvictionByEvictionAPI", "Eviction API: evicting")], obj["status"]["conditions"]
    # Charged at once; the controller then drops e1 from disruptedPods (it is terminating) and
    # counts one healthy pod of the one needed.
    _, charged = call(cluster, "GET", f"{pdbs}/budget")
    assert charged["status"]["disruptionsAllowed"] == 0
    status, _ = call(cluster, "POST", f"{base}/e2/eviction", {**eviction, "metadata": {"name": "e2"}})
    assert status == 429  # the budget is spent
