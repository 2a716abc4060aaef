"""kubectl delete with each --cascade mode, and kubectl wait.

The owner/dependent pair is made by hand: a ConfigMap and Pods whose ownerReferences name it
(a kind no controller manages, so only the garbage collector acts: a ReplicaSet's own
controller would scale the hand-made pods). The garbage collector must then delete or orphan
the Pods according to the propagation policy.
"""

from __future__ import annotations

import time

import pytest
import yaml

from harness import eventually

OWNER = """apiVersion: v1
kind: ConfigMap
metadata:
  name: owner
data: {role: owner}
"""


def make_family(kubectl, ns: str, children: int = 2) -> str:
    """Create the owner ConfigMap and its dependent Pods; return the owner's uid."""
    kubectl("apply", "-n", ns, "-f", "-", input=OWNER)
    uid = kubectl.json("get", "configmap", "owner", "-n", ns)["metadata"]["uid"]
    for i in range(children):
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"owned-{i}", "labels": {"app": "owned"},
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
                    "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
        }
        kubectl("create", "-n", ns, "-f", "-", input=yaml.safe_dump(pod))
    return uid


def pods(kubectl, ns: str) -> dict[str, dict]:
    items = kubectl.json("get", "pods", "-n", ns, "-l", "app=owned")["items"]
    return {p["metadata"]["name"]: p for p in items}


def test_delete_cascade_background(kubectl, namespace):
    make_family(kubectl, namespace)
    out = kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")
    assert out.stdout.strip() == 'configmap "owner" deleted'
    gone = kubectl("get", "configmap", "owner", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # The garbage collector removes the dependents after the owner is gone.
    eventually(lambda: pods(kubectl, namespace) == {}, what="dependent pods deleted")


def test_delete_cascade_foreground(kubectl, namespace):
    make_family(kubectl, namespace)
    # kubectl waits for the owner to disappear; in foreground mode that happens only after
    # every blocking dependent is gone.
    out = kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=foreground")
    assert out.stdout.strip() == 'configmap "owner" deleted'
    assert pods(kubectl, namespace) == {}
    gone = kubectl("get", "configmap", "owner", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_delete_cascade_foreground_marks_owner(kubectl, namespace):
    """While dependents remain (held by a finalizer), the owner carries deletionTimestamp
    and the foregroundDeletion finalizer."""
    make_family(kubectl, namespace, children=1)
    kubectl("patch", "pod", "owned-0", "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=foreground",
            "--wait=false")
    owner = eventually(lambda: kubectl.json("get", "configmap", "owner", "-n", namespace))
    assert owner["metadata"].get("deletionTimestamp")
    assert "foregroundDeletion" in owner["metadata"]["finalizers"]
    pod = eventually(lambda: pods(kubectl, namespace)["owned-0"]["metadata"].get(
        "deletionTimestamp") and pods(kubectl, namespace)["owned-0"])
    assert "example.com/hold" in pod["metadata"]["finalizers"]

    kubectl("patch", "pod", "owned-0", "-n", namespace, "--type=json",
            "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    eventually(lambda: kubectl("get", "configmap", "owner", "-n", namespace,
                               check=False).returncode != 0, what="owner deleted")
    assert pods(kubectl, namespace) == {}


def test_delete_cascade_orphan(kubectl, namespace):
    make_family(kubectl, namespace)
    out = kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=orphan")
    assert out.stdout.strip() == 'configmap "owner" deleted'
    gone = kubectl("get", "configmap", "owner", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    left = pods(kubectl, namespace)
    assert sorted(left) == ["owned-0", "owned-1"]
    # Orphaning removes the owner's reference from each dependent before the owner goes.
    for pod in left.values():
        assert not pod["metadata"].get("ownerReferences"), pod["metadata"]
        assert not pod["metadata"].get("deletionTimestamp")


def test_delete_with_label_selector_and_all(kubectl, namespace):
    for name in ("x1", "x2", "y1"):
        kubectl("create", "configmap", name, "-n", namespace, "--from-literal=k=v")
    kubectl("label", "configmap", "x1", "x2", "-n", namespace, "group=x")
    out = kubectl("delete", "configmap", "-n", namespace, "-l", "group=x")
    assert sorted(out.stdout.strip().splitlines()) == [
        'configmap "x1" deleted', 'configmap "x2" deleted']
    left = kubectl("get", "configmap", "-n", namespace, "-o", "name").stdout.split()
    assert "configmap/y1" in left and "configmap/x1" not in left

    out = kubectl("delete", "configmap", "nope", "-n", namespace, check=False)
    assert out.returncode != 0
    assert 'configmaps "nope" not found' in out.stderr
    out = kubectl("delete", "configmap", "nope", "-n", namespace, "--ignore-not-found")
    assert out.returncode == 0


def open_watches(cluster) -> float:
    """The server's count of open watch requests (apiserver_longrunning_requests)."""
    _, body = cluster.request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith('apiserver_longrunning_requests{verb="WATCH"}'):
            return float(line.split()[-1])
    return 0.0


def test_wait_for_delete(kubectl, cluster, namespace):
    kubectl("create", "configmap", "doomed", "-n", namespace, "--from-literal=k=v")
    # A finalizer keeps the object around after the delete request, so `wait` must really wait.
    kubectl("patch", "configmap", "doomed", "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    kubectl("delete", "configmap", "doomed", "-n", namespace, "--wait=false")
    watches = open_watches(cluster)
    with kubectl.stream("wait", "--for=delete", "configmap/doomed", "-n", namespace,
                        "--timeout=60s") as waiter:
        # Only release the object once `wait` watches it; released earlier, kubectl 1.33 finds it
        # gone at its first GET and exits 0 without a word.
        deadline = time.monotonic() + 20
        while open_watches(cluster) <= watches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiter.proc.poll() is None  # still there: it must not have returned yet
        cluster.kubectl("patch", "configmap", "doomed", "-n", namespace, "--type=json",
                        "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
        waiter.wait_for(r"^configmap/doomed condition met$")
        assert waiter.proc.wait(timeout=30) == 0


def test_wait_for_jsonpath(kubectl, cluster, namespace):
    kubectl("create", "configmap", "phase", "-n", namespace, "--from-literal=state=starting")
    with kubectl.stream("wait", "--for=jsonpath={.data.state}=ready", "configmap/phase",
                        "-n", namespace, "--timeout=60s") as waiter:
        cluster.kubectl("patch", "configmap", "phase", "-n", namespace, "--type=merge",
                        "-p", '{"data":{"state":"ready"}}')
        waiter.wait_for(r"^configmap/phase condition met$")
        assert waiter.proc.wait(timeout=30) == 0

    # Already true: returns at once. Never true: times out with a non-zero exit.
    out = kubectl("wait", "--for=jsonpath={.data.state}=ready", "configmap/phase",
                  "-n", namespace, "--timeout=10s")
    assert out.stdout.strip() == "configmap/phase condition met"
    out = kubectl("wait", "--for=jsonpath={.data.state}=never", "configmap/phase",
                  "-n", namespace, "--timeout=2s", check=False)
    assert out.returncode != 0
    assert "timed out waiting for the condition" in out.stderr


@pytest.mark.parametrize("kind, manifest", [
    pytest.param("deployment", "create deployment gone --image=nginx:1.25", id="deployment"),
    pytest.param("service", "create service clusterip gone --tcp=80:80", id="service"),
])
def test_wait_for_delete_of_deleted_object(kubectl, namespace, kind, manifest):
    kubectl(*manifest.split(), "-n", namespace)
    kubectl("delete", kind, "gone", "-n", namespace)
    out = kubectl("wait", "--for=delete", f"{kind}/gone", "-n", namespace, "--timeout=10s",
                  check=False)
    assert out.returncode == 0, out.stderr
