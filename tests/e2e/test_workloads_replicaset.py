"""ReplicaSets and ReplicationControllers with real kubectl on the one-node cluster (issue 7):
adoption of a matching bare pod, scaling, and a ReplicaSet that a ResourceQuota refuses, which
reports it (FailedCreate, ReplicaFailure) while another namespace's ReplicaSet is served."""

from __future__ import annotations

import json
import uuid

import harness
from workloads import BUSYBOX, SLEEP, get_json, wait_pods

IMAGE = BUSYBOX

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
        command: {command}
"""

RC = """
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {{app: legacy}}
    spec:
      containers:
      - name: app
        image: {image}
        command: {command}
"""

QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata:
  name: pods
spec:
  hard:
    pods: "1"
"""


def replicaset(name: str, replicas: int) -> str:
    return RS.format(name=name, replicas=replicas, image=IMAGE, command=json.dumps(SLEEP))


def test_replicaset_adopts_a_matching_pod_and_scales(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("run", "stray", "-n", ns, f"--image={IMAGE}", "--labels=app=adopt", "--restart=Always", "--command", "--",
      *SLEEP)
    node_cluster.wait_pod(ns, "stray", lambda p: p["status"].get("phase") == "Running", timeout=90)
    k("apply", "-n", ns, "-f", "-", input=replicaset("adopt", 2))
    pods = wait_pods(node_cluster, ns, "app=adopt", 2, ready=False)
    assert "stray" in {p["metadata"]["name"] for p in pods}
    ref = node_cluster.pod(ns, "stray")["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("ReplicaSet", "adopt", True)
    k("scale", "rs", "adopt", "-n", ns, "--replicas=3")
    wait_pods(node_cluster, ns, "app=adopt", 3, ready=False)
    harness.eventually(lambda: k("get", "rs", "adopt", "-n", ns).stdout.splitlines()[1].split()[1:4] == ["3", "3", "3"],
                       what="DESIRED CURRENT READY 3 3 3")
    status = get_json(node_cluster, "rs", "adopt", "-n", ns)["status"]
    assert (status["replicas"], status["fullyLabeledReplicas"], status["availableReplicas"]) == (3, 3, 3)
    assert status["observedGeneration"] == get_json(node_cluster, "rs", "adopt", "-n", ns)["metadata"]["generation"]


def test_replication_controller_keeps_its_pods(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("apply", "-n", ns, "-f", "-", input=RC.format(image=IMAGE, command=json.dumps(SLEEP)))
    pods = wait_pods(node_cluster, ns, "app=legacy", 2, ready=False)
    k("delete", "pod", pods[0]["metadata"]["name"], "-n", ns, "--wait=false")
    after = wait_pods(node_cluster, ns, "app=legacy", 2, ready=False)
    assert pods[0]["metadata"]["name"] not in {p["metadata"]["name"] for p in after}
    assert after[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
    describe = k("describe", "rc", "legacy", "-n", ns).stdout
    assert "SuccessfulCreate" in describe and "replication-controller" in describe


def test_a_replicaset_refused_by_quota_reports_it_and_others_are_served(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("apply", "-n", ns, "-f", "-", input=QUOTA)
    harness.eventually(lambda: get_json(node_cluster, "resourcequota", "pods", "-n", ns).get("status", {}).get("hard"),
                       what="the quota's status")
    k("apply", "-n", ns, "-f", "-", input=replicaset("capped", 3))

    def failure() -> dict | None:
        status = get_json(node_cluster, "rs", "capped", "-n", ns).get("status") or {}
        return next((c for c in status.get("conditions") or () if c["type"] == "ReplicaFailure"), None)
    cond = harness.eventually(failure, timeout=60, what="the ReplicaFailure condition")
    assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
    assert "exceeded quota: pods" in cond["message"]
    events = k("get", "events", "-n", ns, "--field-selector", "involvedObject.name=capped,reason=FailedCreate").stdout
    assert "Error creating: pods" in events and "exceeded quota" in events

    other = f"quota-other-{uuid.uuid4().hex[:5]}"
    k("create", "namespace", other)
    try:
        harness.eventually(lambda: k("get", "serviceaccount", "default", "-n", other, check=False).returncode == 0,
                           what="the default ServiceAccount")
        k("apply", "-n", other, "-f", "-", input=replicaset("fine", 2))
        wait_pods(node_cluster, other, "app=fine", 2, ready=False)
    finally:
        k("delete", "namespace", other, "--wait=false")
    # the capped one still has the one pod the quota allows, and keeps saying why not more
    assert len(wait_pods(node_cluster, ns, "app=capped", 1, ready=False)) == 1
    assert failure() is not None
