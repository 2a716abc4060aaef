"""The scheduler with real kubectl on the one-node cluster (issue 7, acceptance 5 `kubectl run`
and the first half of 11): pods without ``nodeName`` are bound by the scheduler."""

from __future__ import annotations

import harness
import nodes

HUGE = """
apiVersion: v1
kind: Pod
metadata:
  name: huge
spec:
  containers:
  - name: c
    image: k8s.gcr.io/busybox
    command: [sleep, "3600"]
    resources:
      requests:
        cpu: "100"
"""

OTHER = """
apiVersion: v1
kind: Pod
metadata:
  name: other
spec:
  schedulerName: other
  containers:
  - name: c
    image: k8s.gcr.io/busybox
    command: [sleep, "3600"]
"""


def test_kubectl_run_is_scheduled_and_runs(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("run", "sleeper", "-n", ns, "--image=k8s.gcr.io/busybox", "--restart=Never",
                         "--command", "--", "sleep", "3600")
    pod = node_cluster.wait_pod(ns, "sleeper", lambda p: p["status"].get("phase") == "Running", timeout=90,
                                what="sleeper Running")
    assert pod["spec"]["nodeName"] == nodes.NODE_NAME
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "True"
    wide = node_cluster.kubectl("get", "pod", "sleeper", "-n", ns, "-o", "wide").stdout
    assert nodes.NODE_NAME in wide.splitlines()[1]
    describe = node_cluster.kubectl("describe", "pod", "sleeper", "-n", ns).stdout
    assert "Scheduled" in describe
    assert f"Successfully assigned {ns}/sleeper to {nodes.NODE_NAME}" in describe
    assert "default-scheduler" in describe


def test_pod_asking_100_cpus_stays_pending_with_upstreams_message(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=HUGE)
    message = "0/1 nodes are available: 1 Insufficient cpu."

    def failed() -> bool:
        events = node_cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                                      "involvedObject.name=huge,reason=FailedScheduling", check=False).stdout
        return message in events
    harness.eventually(failed, timeout=30, what="the FailedScheduling event")
    pod = node_cluster.pod(ns, "huge")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert cond["message"].startswith(message)
    describe = node_cluster.kubectl("describe", "pod", "huge", "-n", ns).stdout
    assert "FailedScheduling" in describe and message in describe
    assert "default-scheduler" in describe


def test_pod_for_another_scheduler_is_left_alone(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=OTHER)
    # a pod the scheduler does own, created after, is bound: by then "other" was seen and skipped
    node_cluster.kubectl("run", "mine", "-n", ns, "--image=k8s.gcr.io/busybox", "--restart=Never",
                         "--command", "--", "sleep", "3600")
    node_cluster.wait_pod(ns, "mine", lambda p: p["spec"].get("nodeName"), what="mine bound")
    pod = node_cluster.pod(ns, "other")
    assert not pod["spec"].get("nodeName")
    assert pod["status"].get("phase") == "Pending"
    assert not any(c["type"] == "PodScheduled" for c in pod["status"].get("conditions") or ())
    events = node_cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=other").stdout
    assert "FailedScheduling" not in events and "Scheduled" not in events
