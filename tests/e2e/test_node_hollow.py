"""Hollow nodes (issue 6, "Resilience and scale"): ``kubeling hollow-nodes`` hosts 20 node agents
with the hollow runtime in one process, against a real server, watched with real kubectl.

The server runs the nodeipam controller (the default), so each node gets its own podCIDR. Hollow
nodes make no network objects and run no processes, so a plain `harness.Cluster` on 127.0.0.1
serves; the test owns it (nodes it registers would show in a shared cluster's node list).
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import time
from pathlib import Path

import harness
import pytest

COUNT = 20
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: hollow-pod
spec:
  nodeName: hollow-node-7
  containers:
  - name: app
    image: busybox:1.36
    readinessProbe:
      exec:
        command: [cat, /tmp/ready]
      periodSeconds: 2
  - name: sidecar
    image: k8s.gcr.io/pause:3.9
"""


@pytest.fixture
def hollow_cluster(make_cluster, tmp_path):
    """A private server and ``kubeling hollow-nodes --count 20`` against it; both stopped after."""
    cluster = make_cluster()
    log = open(tmp_path / "hollow.log", "wb")  # noqa: SIM115 - the process writes it until teardown
    proc = subprocess.Popen([*harness._server_command(), "hollow-nodes", "--kubeconfig", str(cluster.kubeconfig),
                             "--count", str(COUNT), "--data-dir", str(tmp_path / "hollow-data")],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield cluster, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _get(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _ready_nodes(cluster) -> list[dict]:
    nodes = _get(cluster, "nodes")["items"]
    return [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in n["status"].get("conditions") or [])]


def test_twenty_hollow_nodes_ready_renewing_and_running_a_pod(hollow_cluster, tmp_path):
    cluster, proc = hollow_cluster
    names = [f"hollow-node-{i}" for i in range(COUNT)]

    # -- registration: all Ready, each with its own podCIDR, as `kubectl get nodes` shows them
    nodes = harness.eventually(lambda: len(_ready_nodes(cluster)) == COUNT and _ready_nodes(cluster), timeout=90,
                               interval=0.5, what=f"{COUNT} Ready hollow nodes")
    assert proc.poll() is None, (tmp_path / "hollow.log").read_text()
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(names)
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes}
    assert len(set(cidrs.values())) == COUNT
    assert all(ipaddress.ip_network(c).prefixlen == 24 and ipaddress.ip_network(c).subnet_of(
        ipaddress.ip_network("10.42.0.0/16")) for c in cidrs.values())
    for n in nodes:
        conditions = {c["type"]: c for c in n["status"]["conditions"]}
        assert conditions["Ready"]["reason"] == "KubeletReady"
        assert {conditions[t]["status"] for t in ("MemoryPressure", "DiskPressure", "PIDPressure")} == {"False"}
        assert n["status"]["nodeInfo"]["containerRuntimeVersion"] == "hollow://0.1.0"
        assert n["status"]["allocatable"]["pods"] == "110"
    table = cluster.kubectl("get", "nodes", "--no-headers").stdout.splitlines()
    assert len(table) == COUNT and all(line.split()[1] == "Ready" for line in table)

    # -- heartbeats: a Lease per node, each renewed within one period (10 s, jittered)
    leases = {item["metadata"]["name"]: item for item in _get(cluster, "leases", "-n", "kube-node-lease")["items"]}
    assert sorted(leases) == sorted(names)
    for name, lease in leases.items():
        assert lease["spec"]["holderIdentity"] == name and lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    first = {name: lease["spec"]["renewTime"] for name, lease in leases.items()}

    def all_renewed():
        now = {i["metadata"]["name"]: i["spec"]["renewTime"]
               for i in _get(cluster, "leases", "-n", "kube-node-lease")["items"]}
        return [name for name in names if now.get(name) == first[name]] == []
    started = time.monotonic()
    harness.eventually(all_renewed, timeout=30, interval=1.0, what="every Lease renewed")
    assert time.monotonic() - started < 25
    # The Lease is the heartbeat: an unchanged Node status is not rewritten every 10 s (upstream
    # rewrites it every 5 min), so the Ready condition's heartbeat has not moved.
    def heartbeats(items):
        return {n["metadata"]["name"]: next(c["lastHeartbeatTime"] for c in n["status"]["conditions"]
                                            if c["type"] == "Ready") for n in items}
    assert heartbeats(_get(cluster, "nodes")["items"]) == heartbeats(nodes)

    # -- a bound pod goes Running, with its node's podCIDR and upstream's status
    ns = "hollow-e2e"
    cluster.kubectl("create", "namespace", ns)
    harness.eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns,
                                               check=False).returncode == 0, timeout=30, what="default SA")
    cluster.kubectl("create", "-n", ns, "-f", "-", input=POD)

    def running():
        pod = _get(cluster, "pod", "hollow-pod", "-n", ns)
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        return pod if pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True" else None
    pod = harness.eventually(running, timeout=60, what="hollow-pod Running and Ready")
    status = pod["status"]
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(cidrs["hollow-node-7"])
    assert status["podIPs"] == [{"ip": status["podIP"]}] and status["hostIP"]
    assert status["qosClass"] == "BestEffort" and status["startTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}
    for c in conditions.values():
        assert c["status"] == "True" and "reason" not in c and "message" not in c, c
    by_name = {s["name"]: s for s in status["containerStatuses"]}
    assert sorted(by_name) == ["app", "sidecar"]
    for s in by_name.values():
        assert set(s["state"]) == {"running"} and s["ready"] and s["started"] and s["restartCount"] == 0
        assert s["imageID"].startswith("docker.io/library/busybox@sha256:" if s["name"] == "app"
                                       else "k8s.gcr.io/pause@sha256:")
    assert by_name["app"]["image"] == "busybox:1.36"
    wide = cluster.kubectl("get", "pod", "hollow-pod", "-n", ns, "-o", "wide", "--no-headers").stdout.split()
    assert wide[1:3] == ["2/2", "Running"] and wide[5] == status["podIP"] and wide[6] == "hollow-node-7"
    events = cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=hollow-pod").stdout
    for reason in ("Pulling", "Pulled", "Created", "Started"):
        assert reason in events, events

    # -- deleting it works: the agent stops it and removes it from the API
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "hollow-pod", "-n", ns, "--timeout=60s")
    assert cluster.kubectl("get", "pod", "hollow-pod", "-n", ns, check=False).returncode != 0
    assert time.monotonic() - started < 30
    assert proc.poll() is None, (tmp_path / "hollow.log").read_text()

    # -- SIGTERM ends the process cleanly; the nodes stay registered (as kubelets' do)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (tmp_path / "hollow.log").read_text()[-4000:]
    assert "Traceback" not in (tmp_path / "hollow.log").read_text()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
