"""Restarting the agent, or the whole server, does not disturb running pods (issue 6, acceptance 9).

A private `NodeCluster` (the test restarts it) runs five pods; then (1) the agent child alone is
killed with SIGKILL, as a crash, and the server starts a new one; (2) the whole server is stopped
and started again (containers outlive it, as with k3s). After each, the new agent re-adopts the
running containers: no container restarts, restartCount stays 0, the same container IDs and pod
IPs, every pod Ready, no Killing/SandboxChanged events, and the pods still answer on their IPs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import harness
import nodes

NS = "resilience"
PODS = [f"p{i}" for i in range(5)]

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
  - name: side
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""


def agent_pids(cluster: nodes.NodeCluster) -> list[int]:
    """The server's child processes running ``kubeling agent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == cluster.proc.pid and b"agent" in argv:
            found.append(int(entry.name))
    return found


def snapshot(cluster: nodes.NodeCluster) -> dict[str, dict]:
    """What a user sees of each pod: phase, Ready, IP, and per container its ID and restarts."""
    listed = nodes.json_of(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    out = {}
    for pod in listed:
        status = pod["status"]
        ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
        out[pod["metadata"]["name"]] = {
            "phase": status.get("phase"), "ready": ready, "podIP": status.get("podIP"),
            "containers": {c["name"]: (c.get("containerID"), c.get("restartCount"), "running" in c["state"],
                                       c.get("ready")) for c in status.get("containerStatuses") or []}}
    return out


def all_ready(snap: dict[str, dict]) -> bool:
    return sorted(snap) == PODS and all(
        p["phase"] == "Running" and p["ready"] == "True" and len(p["containers"]) == 2 and
        all(running and ready for _, _, running, ready in p["containers"].values()) for p in snap.values())


def ready_snapshot(cluster: nodes.NodeCluster) -> dict[str, dict] | None:
    snap = snapshot(cluster)
    return snap if all_ready(snap) else None


def fetch_all(cluster: nodes.NodeCluster, snap: dict[str, dict]) -> dict[str, str]:
    """Each pod's page, fetched on its pod IP from inside the cluster's network namespace."""
    return {name: cluster.netns.exec("curl", "-sS", "--max-time", "5", f"http://{p['podIP']}:8080/",
                                     check=False).stdout.strip() for name, p in snap.items()}


def events(cluster: nodes.NodeCluster) -> list[str]:
    items = nodes.json_of(cluster.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"]
    return [f"{e['reason']} {e['involvedObject']['name']} x{e.get('count') or 1}: {e.get('message', '')}" for e in items]


def assert_undisturbed(cluster: nodes.NodeCluster, before: dict[str, dict], events_before: list[str], after: str) -> None:
    # Give the new agent time to relist, sync every pod and write status: a wrong adoption would
    # show as a kill, a new container or a status flip within these seconds.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        now = snapshot(cluster)
        assert now == before, f"pods changed after {after}:\nbefore {before}\nafter  {now}"
        time.sleep(0.5)
    assert fetch_all(cluster, before) == {name: name for name in PODS}
    new = [e for e in events(cluster) if e not in events_before]
    disturbing = [e for e in new if e.split()[0] in ("Killing", "SandboxChanged", "Created", "Started", "BackOff")]
    assert not disturbing, f"after {after}: {disturbing}"


def test_agent_and_server_restarts_keep_pods_running(tmp_path, images_dir):
    cluster = nodes.NodeCluster(tmp_path / "cluster", images_dir=images_dir)
    try:
        cluster.start()
        cluster.wait_node_ready()
        cluster.kubectl("create", "namespace", NS)
        harness.eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", NS,
                                                   check=False).returncode == 0, what="the default ServiceAccount")
        cluster.kubectl("create", "-n", NS, "-f", "-", input="---\n".join(POD.format(name=n) for n in PODS))
        before = harness.eventually(lambda: ready_snapshot(cluster), timeout=90, what="five pods running and ready")
        assert all(restarts == 0 for p in before.values() for _, restarts, _, _ in p["containers"].values())
        assert len({p["podIP"] for p in before.values()}) == 5
        assert fetch_all(cluster, before) == {name: name for name in PODS}
        events_before = events(cluster)

        # 1. the agent alone crashes; the server starts another, which re-adopts the containers
        old = agent_pids(cluster)
        assert len(old) == 1, old
        log_mark = len(cluster.log())
        os.kill(old[0], signal.SIGKILL)
        harness.eventually(lambda: agent_pids(cluster) and agent_pids(cluster) != old, timeout=30,
                           what="the server restarted its agent")
        harness.eventually(lambda: "agent kl-node ready" in cluster.log()[log_mark:], timeout=60,
                           what="the new agent ready")
        assert_undisturbed(cluster, before, events_before, "the agent was killed")

        # 2. the whole server restarts; the containers outlive it
        log_mark = len(cluster.log())
        cluster.restart()
        harness.eventually(lambda: "agent kl-node ready" in cluster.log()[log_mark:], timeout=60,
                           what="the agent ready after the server restart")
        cluster.wait_node_ready()
        assert_undisturbed(cluster, before, events_before, "the server restarted")
        assert "exited with" not in cluster.log()[log_mark:], "a child of the server died after the restart"
    finally:
        cluster.destroy()
