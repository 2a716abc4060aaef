"""100 pod create/delete cycles leave nothing behind (issue 6, acceptance 10).

A private `NodeCluster` (so that no other test's pods are counted) runs ten batches of ten pods.
Each pod has what a pod can hold on a node: an init container and two app containers (runc
containers and shims), limits (a burstable pod cgroup and container cgroups), an emptyDir and the
service-account projected volume (mounts), a hostPort (iptables rules), and its sandbox (a netns,
a veth on the bridge, an IP from the node's IPAM). Each batch is created, seen Running, and
deleted (`kubectl delete` waits until the pods are gone from the API).

Then every kind is counted, each by two means, and each must be 0:
- the project's counters: `runtime.cleanup.leaks` (netns, runc, mounts, cgroups, shims) and
  `network.leaks` (veths on the bridge, IP reservations, hostPort rules), the latter run inside
  the cluster's network namespace;
- raw counts: the netns files of every sandbox id seen during the run, veth links in the
  cluster's namespace other than its uplink, cgroup dirs under the cluster's cgroup root,
  mountinfo entries under the data dir, ``runc list`` of the agent's state dir, IPAM files, live
  shim processes, and iptables rules in the namespace that name a pod.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Self

import harness
import nodes

from kubeling.kubelet.runtime import cgroups

NS = "leaks"
BATCHES, PER_BATCH = 10, 10

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: cycle-{i}
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{}}
  initContainers:
  - name: init
    image: busybox
    command: ["sh", "-c", "echo ready > /scratch/init"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.5; done"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
    resources:
      requests: {{cpu: 10m, memory: 8Mi}}
      limits: {{cpu: 100m, memory: 32Mi}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  - name: side
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.5; done"]
"""


class SandboxWatcher:
    """Collects every sandbox id the agent's root shows while the cycles run (its sandbox dirs
    and IPAM owners), so that the netns file of each can be checked afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        try:
            self.seen.update(os.listdir(self.root / "sandboxes"))
        except FileNotFoundError:
            pass
        for f in (self.root / "network").glob("*.*.*.*") if (self.root / "network").exists() else []:
            try:
                self.seen.add(f.read_text().split("\n", 1)[0].strip())
            except OSError:
                pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def project_counts(cluster: nodes.NodeCluster, root: Path) -> dict[str, int]:
    from kubeling.kubelet.runtime.cleanup import leaks
    counts = leaks(root, cluster.cgroup_root)
    # network state lives in the cluster's namespace: count it from there
    script = ("import json, sys; from kubeling.kubelet.network import leaks; "
              "print(json.dumps(leaks(sys.argv[1])))")
    done = cluster.netns.exec(sys.executable, "-c", script, str(root))
    counts.update(json.loads(done.stdout))
    return counts


def raw_counts(cluster: nodes.NodeCluster, root: Path, sandbox_ids: set[str]) -> dict[str, int]:
    links = json.loads(cluster.netns.exec("ip", "-j", "-d", "link", "show").stdout)
    veths = [link["ifname"] for link in links
             if (link.get("linkinfo") or {}).get("info_kind") == "veth" and link["ifname"] != "eth0"]
    netns = [i for i in sandbox_ids if Path(f"/run/netns/kl-{i[:16]}").exists()]
    cgroup_dirs = []
    for h in cgroups.hierarchies():
        top = h / cluster.cgroup_root
        for dirpath, dirnames, _ in os.walk(top) if top.exists() else []:
            # the QoS tiers (kubepods, burstable, besteffort) stay, as upstream's do
            cgroup_dirs += [d for d in dirnames if d.startswith("pod") or len(d) == 64]
    prefix = str(cluster.data_dir.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    runc = json.loads(cluster.netns.exec("runc", "--root", str(root / "runc"), "list", "--format", "json").stdout
                      or "null") or []
    network = root / "network"
    ips = [p.name for p in network.glob("*.*.*.*")] if network.exists() else []
    shims = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"shim.py") for a in argv) and any(a.startswith(str(root).encode()) for a in argv):
                shims.append(entry.name)
    rules = cluster.netns.exec("iptables-save", "-t", "nat").stdout.splitlines()
    pod_rules = [r for r in rules if r.startswith("-A") and "cycle-" in r]
    return {"netns": len(netns), "veths": len(veths), "cgroups": len(cgroup_dirs), "mounts": len(mounts),
            "runc": len(runc), "ips": len(ips), "shims": len(shims), "hostport_rules": len(pod_rules)}


def all_running(cluster: nodes.NodeCluster) -> bool:
    items = nodes.json_of(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    return len(items) == PER_BATCH and all(p["status"].get("phase") == "Running" for p in items)


def test_100_pod_cycles_leak_nothing(tmp_path, images_dir):
    cluster = nodes.NodeCluster(tmp_path / "cluster", images_dir=images_dir)
    root = cluster.data_dir / "agent"
    try:
        cluster.start()
        cluster.wait_node_ready()
        cluster.kubectl("create", "namespace", NS)
        harness.eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", NS,
                                                   check=False).returncode == 0, what="the default ServiceAccount")
        started = time.monotonic()
        with SandboxWatcher(root) as watcher:
            for batch in range(BATCHES):
                manifest = "---\n".join(POD.format(i=batch * PER_BATCH + j, host_port=30000 + j)
                                        for j in range(PER_BATCH))
                cluster.kubectl("create", "-n", NS, "-f", "-", input=manifest)
                harness.eventually(lambda: all_running(cluster), timeout=90, interval=0.5,
                                   what=f"batch {batch}: {PER_BATCH} pods Running")
                if batch == 0:
                    # the counters see the live pods, so a zero at the end means something
                    live = project_counts(cluster, root)
                    assert live["netns"] == live["veths"] == live["ips"] == PER_BATCH, live
                    assert live["runc"] >= 3 * PER_BATCH and live["hostport_rules"] >= PER_BATCH, live
                    assert live["cgroups"] > 0 and live["mounts"] > 0 and live["shims"] > 0, live
                cluster.kubectl("delete", "pods", "--all", "-n", NS, "--wait=true", timeout=120)
            watcher.poll()
        elapsed = time.monotonic() - started
        assert len(watcher.seen) >= BATCHES * PER_BATCH, f"only {len(watcher.seen)} sandboxes seen"

        zero_project = dict.fromkeys(("netns", "runc", "mounts", "cgroups", "shims", "veths", "ips",
                                      "hostport_rules"), 0)
        harness.eventually(lambda: project_counts(cluster, root) == zero_project, timeout=30,
                           what="the project's counters all 0")
        raw = raw_counts(cluster, root, watcher.seen)
        assert raw == dict.fromkeys(raw, 0), raw
        assert nodes.json_of(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"] == []
        print(f"{BATCHES * PER_BATCH} pod cycles in {elapsed:.0f}s; {len(watcher.seen)} sandboxes; "
              f"left: {raw}")
    finally:
        cluster.destroy()
