"""Preemption with real kubectl on the one-node cluster (issue 7, acceptance 11, second half):
a pod of a higher PriorityClass that fits nowhere evicts a lower-priority pod and runs."""

from __future__ import annotations

import json

import harness
import nodes

PRIORITY_CLASS = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: {name}
value: {value}
description: e2e preemption
"""

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {priority}
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: c
    image: k8s.gcr.io/busybox
    command: [sleep, "3600"]
    resources:
      requests:
        cpu: {cpu}m
"""


def milli(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def free_cpu(cluster) -> int:
    """The node's allocatable CPU less what the pods bound to it request (other tests share it)."""
    node = json.loads(cluster.kubectl("get", "node", nodes.NODE_NAME, "-o", "json").stdout)
    pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json",
                                      "--field-selector", f"spec.nodeName={nodes.NODE_NAME}").stdout)["items"]
    used = sum(milli(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
               for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")
               for c in p["spec"]["containers"])
    return milli(node["status"]["allocatable"]["cpu"]) - used


def test_higher_priority_pod_preempts_a_lower_one(node_cluster, node_namespace):
    ns = node_namespace
    kubectl = node_cluster.kubectl
    high_class = f"{ns}-high"[:63]
    kubectl("create", "-f", "-", input=PRIORITY_CLASS.format(name=high_class, value=1000))
    try:
        # two pods of this size cannot share the node (2 * (free - 100) > free)
        cpu = free_cpu(node_cluster) - 100
        assert cpu > 100, f"the node has only {cpu + 100}m CPU free"
        # sleep as PID 1 ignores SIGTERM: the grace period is how long the victim stays terminating
        kubectl("create", "-n", ns, "-f", "-", input=POD.format(name="low", priority="", grace=5, cpu=cpu))
        low = node_cluster.wait_pod(ns, "low", lambda p: p["status"].get("phase") == "Running", timeout=90,
                                    what="low Running")
        assert low["spec"].get("priority", 0) == 0

        kubectl("create", "-n", ns, "-f", "-",
                input=POD.format(name="high", priority=f"priorityClassName: {high_class}", grace=5, cpu=cpu))

        def disruption_target():
            p = json.loads(kubectl("get", "pod", "low", "-n", ns, "-o", "json", check=False).stdout or "{}")
            return next((c for c in (p.get("status") or {}).get("conditions") or ()
                         if c["type"] == "DisruptionTarget"), None)
        cond = harness.eventually(disruption_target, timeout=30, interval=0.1,
                                  what="the DisruptionTarget condition on the victim")
        assert (cond["status"], cond["reason"]) == ("True", "PreemptionByScheduler")
        assert cond["message"] == "default-scheduler: preempting to accommodate a higher priority pod"

        harness.eventually(lambda: kubectl("get", "pod", "low", "-n", ns, check=False).returncode != 0,
                           timeout=60, what="the victim deleted")
        high = node_cluster.wait_pod(ns, "high", lambda p: p["status"].get("phase") == "Running", timeout=90,
                                     what="high Running")
        assert high["spec"]["nodeName"] == nodes.NODE_NAME
        assert high["spec"]["priority"] == 1000

        events = json.loads(kubectl("get", "events", "-n", ns, "-o", "json", "--field-selector",
                                    "involvedObject.name=low,reason=Preempted").stdout)["items"]
        assert [e["message"] for e in events] == \
            [f"Preempted by pod {high['metadata']['uid']} on node {nodes.NODE_NAME}"]
        assert events[0]["type"] == "Normal"
        describe = kubectl("describe", "pod", "high", "-n", ns).stdout
        assert f"Successfully assigned {ns}/high to {nodes.NODE_NAME}" in describe
    finally:
        kubectl("delete", "priorityclass", high_class, "--wait=false", check=False)
