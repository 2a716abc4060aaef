"""DaemonSets with real kubectl on the one-node cluster (issue 7, acceptance 6): a pod on the node,
``rollout status``, an image update that rolls, ``rollout history`` and ``rollout undo``.

The manifest is `workloads.daemonset` (the multi-node test of "a node added later gets a pod"
uses it too); `wait_daemon_pods_on` takes any cluster with ``kubectl`` and a list of node names.
"""

from __future__ import annotations

import harness
import nodes
from workloads import daemonset, live_pods

IMAGE = "k8s.gcr.io/busybox"
OTHER_IMAGE = "docker.io/library/busybox:latest"  # the same bytes behind another name: an image update


def wait_daemon_pods_on(cluster, namespace: str, name: str, node_names: list[str], image: str = IMAGE,
                        timeout: float = 120) -> dict[str, dict]:
    """Wait until each of ``node_names`` runs exactly one Running pod of the set with ``image``
    (and no other node runs one); returns {node: pod}."""
    def check():
        pods = live_pods(cluster, namespace, f"app={name}")
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault(p["spec"].get("nodeName") or "", []).append(p)
        if sorted(by_node) != sorted(node_names) or any(len(v) != 1 for v in by_node.values()):
            return None
        if not all(v[0]["status"].get("phase") == "Running" and v[0]["spec"]["containers"][0]["image"] == image
                   for v in by_node.values()):
            return None
        return {n: v[0] for n, v in by_node.items()}
    return harness.eventually(check, timeout=timeout, interval=0.5,
                              what=f"one Running {image} pod of {name} on each of {node_names}")


def test_daemonset_runs_on_the_node_rolls_and_rolls_back(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=daemonset())
    first = wait_daemon_pods_on(node_cluster, ns, "agent", [nodes.NODE_NAME])[nodes.NODE_NAME]
    terms = first["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [nodes.NODE_NAME]
    done = node_cluster.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=120s", timeout=130)
    assert 'daemon set "agent" successfully rolled out' in done.stdout

    wide = node_cluster.kubectl("get", "ds", "agent", "-n", ns).stdout.splitlines()
    assert wide[0].split()[:6] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE"]
    assert wide[1].split()[1:6] == ["1", "1", "1", "1", "1"]

    node_cluster.kubectl("set", "image", "ds/agent", f"c={OTHER_IMAGE}", "-n", ns)
    done = node_cluster.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=120s", timeout=130)
    assert "successfully rolled out" in done.stdout
    second = wait_daemon_pods_on(node_cluster, ns, "agent", [nodes.NODE_NAME], image=OTHER_IMAGE)[nodes.NODE_NAME]
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["metadata"]["labels"]["controller-revision-hash"] != \
        first["metadata"]["labels"]["controller-revision-hash"]

    history = node_cluster.kubectl("rollout", "history", "ds/agent", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    # the undo and its status with the other supported kubectl: both read ControllerRevisions
    node_cluster.kubectl("rollout", "undo", "ds/agent", "-n", ns, version="1.32")
    node_cluster.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=120s", timeout=130, version="1.32")
    wait_daemon_pods_on(node_cluster, ns, "agent", [nodes.NODE_NAME], image=IMAGE)

    describe = node_cluster.kubectl("describe", "ds", "agent", "-n", ns).stdout
    assert "SuccessfulCreate" in describe and "Created pod: agent-" in describe
    assert "SuccessfulDelete" in describe
