"""kubectl describe, including the Events that kubectl finds by involvedObject field selectors."""

from __future__ import annotations

import datetime
import re

import harness

from kubernetes import client as k8s

POD = """apiVersion: v1
kind: Pod
metadata:
  name: described
  labels: {app: described}
spec:
  containers:
  - name: main
    image: busybox:1.36
    args: ["sleep", "3600"]
"""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_yaml(ns: str, name: str, obj: dict, reason: str, message: str, type_: str) -> str:
    meta = obj["metadata"]
    return f"""apiVersion: v1
kind: Event
metadata:
  name: {name}
  namespace: {ns}
involvedObject:
  apiVersion: {obj["apiVersion"]}
  kind: {obj["kind"]}
  name: {meta["name"]}
  namespace: {ns}
  uid: "{meta["uid"]}"
reason: {reason}
message: "{message}"
type: {type_}
source:
  component: kubelet
count: 3
firstTimestamp: "{now()}"
lastTimestamp: "{now()}"
"""


def test_describe_pod_shows_events(kubectl, namespace):
    ns = namespace
    kubectl("apply", "-n", ns, "-f", "-", input=POD)
    pod = kubectl.json("get", "pod", "described", "-n", ns)
    kubectl("create", "-f", "-", input=event_yaml(
        ns, "described.probe", pod, "Unhealthy",
        "Liveness probe failed: cat: can't open '/tmp/healthy'", "Warning"))
    # An event about another object with the same kind must not show up.
    other = dict(pod, metadata=dict(pod["metadata"], name="someone-else", uid="0000"))
    kubectl("create", "-f", "-", input=event_yaml(
        ns, "other.event", other, "Killing", "not for this pod", "Normal"))

    out = kubectl("describe", "pod", "described", "-n", ns).stdout
    assert re.search(r"^Name:\s+described$", out, re.M)
    assert re.search(rf"^Namespace:\s+{ns}$", out, re.M)
    assert re.search(r"^Status:\s+Pending$", out, re.M)
    assert re.search(r"^\s+Image:\s+busybox:1.36$", out, re.M)
    events = out[out.index("\nEvents:"):]
    assert re.search(r"Type\s+Reason\s+Age\s+From\s+Message", events)
    assert re.search(r"Warning\s+Unhealthy\s+.*kubelet\s+Liveness probe failed: "
                     r"cat: can't open '/tmp/healthy'", events), events
    assert "not for this pod" not in events


def test_describe_deployment_with_event_from_python_client(kubectl, cluster, namespace):
    ns = namespace
    kubectl("create", "deployment", "desc-dep", "-n", ns, "--image=nginx:1.25", "--replicas=2")
    dep = kubectl.json("get", "deployment", "desc-dep", "-n", ns)
    api = k8s.CoreV1Api(cluster.python_client())
    api.create_namespaced_event(ns, k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name="desc-dep.scaled"),
        involved_object=k8s.V1ObjectReference(
            api_version="apps/v1", kind="Deployment", name="desc-dep", namespace=ns,
            uid=dep["metadata"]["uid"]),
        reason="ScalingReplicaSet", message="Scaled up replica set desc-dep-abc to 2",
        type="Normal", source=k8s.V1EventSource(component="deployment-controller"),
        first_timestamp=datetime.datetime.now(datetime.timezone.utc),
        last_timestamp=datetime.datetime.now(datetime.timezone.utc), count=1))

    # The Deployment controller scales up a ReplicaSet; this cluster has no node, so nothing
    # becomes available.
    replicas = re.compile(r"^Replicas:\s+2 desired \| 2 updated \| 2 total \| 0 available \| 2 unavailable$", re.M)
    out = harness.eventually(lambda: (lambda o: o if replicas.search(o) else None)(
        kubectl("describe", "deployment", "desc-dep", "-n", ns).stdout), what="the controller's status")
    assert re.search(r"Normal\s+ScalingReplicaSet\s+.*deployment-controller\s+"
                     r"Scaled up replica set desc-dep-[a-z0-9]+ to 2\n", out), out
    assert re.search(r"^StrategyType:\s+RollingUpdate$", out, re.M)
    assert re.search(r"^RollingUpdateStrategy:\s+25% max unavailable, 25% max surge$", out, re.M)
    assert re.search(r"Normal\s+ScalingReplicaSet\s+.*deployment-controller\s+"
                     r"Scaled up replica set desc-dep-abc to 2", out), out


def test_describe_without_events(kubectl, namespace):
    kubectl("create", "configmap", "quiet", "-n", namespace, "--from-literal=k=v")
    out = kubectl("describe", "configmap", "quiet", "-n", namespace).stdout
    assert re.search(r"^Name:\s+quiet$", out, re.M)
    assert re.search(r"^k:\n----\nv$", out, re.M), out
    assert re.search(r"^Events:\s+<none>$", out, re.M)
