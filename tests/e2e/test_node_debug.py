"""`kubectl debug`: an ephemeral container added to a running pod (issue 6, streaming)."""

from __future__ import annotations

POD = """
apiVersion: v1
kind: Pod
metadata: {name: target}
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app > /tmp/x; sleep 3600"]
"""


def test_kubectl_debug_runs_an_ephemeral_container(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=POD)
    node_cluster.wait_pod(ns, "target", lambda p: p["status"].get("phase") == "Running")
    node_cluster.kubectl("debug", "-n", ns, "target", "--image=busybox", "-c", "dbg", "--",
                         "sh", "-c", "echo debugging $(hostname)")
    pod = node_cluster.wait_pod(ns, "target", lambda p: any(
        "terminated" in s.get("state", {}) or "running" in s.get("state", {})
        for s in p["status"].get("ephemeralContainerStatuses") or []), what="the ephemeral container ran")
    status = pod["status"]["ephemeralContainerStatuses"][0]
    assert status["name"] == "dbg"
    logs = node_cluster.kubectl("logs", "-n", ns, "target", "-c", "dbg").stdout
    assert logs.strip() == "debugging target"
    # the app container was not disturbed
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
