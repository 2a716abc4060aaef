"""Resource limits enforced by the node's cgroups (issue 6, acceptance 6).

- A container that allocates past its memory limit is killed by the kernel's memory-cgroup OOM
  killer, and the pod's status says so as upstream's does: ``OOMKilled``, exit code 137.
- A busy loop under a 200m CPU limit is held to 0.2 cores by the CFS quota: measured from the
  container's own ``cpuacct.usage`` over a few seconds, and seen in the agent's
  ``/stats/summary`` (through the API server's nodes/proxy), within 10 %.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import harness
import nodes


def wait_pod(cluster: nodes.NodeCluster, ns: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
    """`NodeCluster.wait_pod`, with what the user would look at next when it times out."""
    try:
        return cluster.wait_pod(ns, name, predicate, timeout=timeout, what=what)
    except AssertionError as e:
        describe = cluster.kubectl("describe", "pod", name, "-n", ns, check=False).stdout
        raise AssertionError(f"{e}\n--- kubectl describe ---\n{describe}\n--- server log ---\n"
                             f"{cluster.log_tail(40)}") from None

OOM = """
apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  nodeName: kl-node
  restartPolicy: {policy}
  containers:
  - name: hog
    image: busybox
    # dd's 128 MiB block buffer is filled from /dev/zero: far past the 32 MiB limit
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=4"]
    resources:
      limits: {{memory: 32Mi}}
"""


def test_exceeding_the_memory_limit_is_oomkilled(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=OOM.format(policy="Never"))
    pod = wait_pod(node_cluster, ns, "oom", lambda p: p["status"].get("phase") == "Failed",
                                timeout=60, what="the pod Failed after its OOM kill")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
    wide = node_cluster.kubectl("get", "pod", "oom", "-n", ns).stdout
    assert "OOMKilled" in wide


def test_an_oomkilled_container_is_restarted_with_oomkilled_as_last_state(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=OOM.format(policy="Always"))
    pod = wait_pod(
        node_cluster, ns, "oom", lambda p: (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1,
        timeout=60, what="a restart after the OOM kill")
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)
    describe = node_cluster.kubectl("describe", "pod", "oom", "-n", ns).stdout
    assert "Reason:       OOMKilled" in describe
    assert "Exit Code:    137" in describe


BUSY = """
apiVersion: v1
kind: Pod
metadata:
  name: busy
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 0
  containers:
  - name: spin
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      limits: {cpu: 200m, memory: 32Mi}
"""

WINDOW = 5.0   # seconds of busy loop measured: 50 CFS periods, so the quota dominates rounding


def _container_cgroup(cluster: nodes.NodeCluster, pod: dict) -> Path:
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    top = Path("/sys/fs/cgroup/cpuacct") / cluster.cgroup_root / "kubepods"
    found = list(top.glob(f"**/pod{pod['metadata']['uid']}/{cid}"))
    assert len(found) == 1, f"the container's cpuacct cgroup under {top}: {found}"
    return found[0]


def _summary_cpu(cluster: nodes.NodeCluster, ns: str) -> tuple[float, int]:
    """(time, usageCoreNanoSeconds) of the container from the agent's /stats/summary."""
    raw = cluster.kubectl("get", "--raw", f"/api/v1/nodes/{nodes.NODE_NAME}/proxy/stats/summary").stdout
    summary = json.loads(raw)
    pod = next(p for p in summary["pods"] if p["podRef"]["namespace"] == ns and p["podRef"]["name"] == "busy")
    cpu = next(c for c in pod["containers"] if c["name"] == "spin")["cpu"]
    return time.monotonic(), int(cpu["usageCoreNanoSeconds"])


def test_a_200m_cpu_limit_holds_a_busy_loop_to_a_fifth_of_a_core(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=BUSY)
    pod = wait_pod(node_cluster, ns, "busy", lambda p: p["status"].get("phase") == "Running")
    cgroup = _container_cgroup(node_cluster, pod)
    cpu_dir = Path(str(cgroup).replace("/cpuacct/", "/cpu/", 1))
    # the limit as the kernel holds it: 20 ms of CPU per 100 ms period
    assert int((cpu_dir / "cpu.cfs_quota_us").read_text()) == 20000
    assert int((cpu_dir / "cpu.cfs_period_us").read_text()) == 100000

    def usage() -> tuple[float, int]:
        return time.monotonic(), int((cgroup / "cpuacct.usage").read_text())

    s0 = _summary_cpu(node_cluster, ns)
    t0, u0 = usage()
    throttled0 = _throttled(cpu_dir)
    # let the loop run: poll (rather than sleep) until the window has passed
    harness.eventually(lambda: time.monotonic() - t0 >= WINDOW, timeout=WINDOW + 5, interval=0.5)
    t1, u1 = usage()
    s1 = _summary_cpu(node_cluster, ns)
    cores = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.18 <= cores <= 0.22, f"measured {cores:.3f} cores from cpuacct.usage"
    # the loop wanted a whole core: the quota, not a lack of work, is what held it
    assert _throttled(cpu_dir) > throttled0
    summary_cores = (s1[1] - s0[1]) / 1e9 / (s1[0] - s0[0])
    assert 0.18 <= summary_cores <= 0.22, f"measured {summary_cores:.3f} cores from /stats/summary"


def _throttled(cpu_dir: Path) -> int:
    stat = dict(line.split() for line in (cpu_dir / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])
