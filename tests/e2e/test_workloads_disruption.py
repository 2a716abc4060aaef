"""Disruption budgets, cordon and drain with real kubectl on the one-node cluster (issue 7,
acceptance 10 on one node): the disruption and node lifecycle controllers, the eviction API, the
Deployment controller, the scheduler and the node agent together.

On one node a drain cannot finish while a budget protects the pods (the replacements have
nowhere to go while the node is cordoned): exactly the disruptions the budget allows happen, and
``kubectl drain`` keeps retrying the 429s until its timeout. ``uncordon`` lets the replacement run.
"""

from __future__ import annotations

import json

import harness
import nodes
from workloads import deployment, get_json, is_ready, live_pods, pdb, wait_pods

NODE = nodes.NODE_NAME


def taints(cluster) -> list[tuple[str, str]]:
    node = get_json(cluster, "node", NODE)
    return sorted((t["key"], t["effect"]) for t in node["spec"].get("taints") or ())


def pdb_status(cluster, ns: str, name: str, **want) -> dict | None:
    st = get_json(cluster, "pdb", name, "-n", ns).get("status") or {}
    return st if all(st.get(k) == v for k, v in want.items()) else None


def ready_pods(cluster, ns: str, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in live_pods(cluster, ns, f"app={app}") if is_ready(p))


def deploy(cluster, ns: str, name: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment(name))
    wait_pods(cluster, ns, f"app={name}", 3, timeout=90)


def test_cordon_taints_the_node_unschedulable_and_uncordon_clears_it(node_cluster):
    try:
        node_cluster.kubectl("cordon", NODE)
        harness.eventually(lambda: ("node.kubernetes.io/unschedulable", "NoSchedule") in taints(node_cluster),
                           timeout=20, what="the unschedulable taint")
        wide = node_cluster.kubectl("get", "node", NODE).stdout
        assert "Ready,SchedulingDisabled" in wide
    finally:
        node_cluster.kubectl("uncordon", NODE)
    harness.eventually(lambda: ("node.kubernetes.io/unschedulable", "NoSchedule") not in taints(node_cluster),
                       timeout=20, what="the unschedulable taint removed")
    assert "SchedulingDisabled" not in node_cluster.kubectl("get", "node", NODE).stdout


def test_budget_status_for_a_deployment_and_its_kubectl_columns(node_cluster, node_namespace):
    ns = node_namespace
    deploy(node_cluster, ns, "web")
    node_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pdb("min2", "web", "minAvailable: 2"))
    node_cluster.kubectl("apply", "-n", ns, "-f", "-",
                         input=pdb("max34", "web", "maxUnavailable: 34%"))
    st = harness.eventually(lambda: pdb_status(node_cluster, ns, "min2", observedGeneration=1, currentHealthy=3),
                            timeout=30, what="min2's status")
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (3, 2, 1)
    cond = next(c for c in st["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")
    # maxUnavailable 34% of the Deployment's 3 replicas rounds up to 2
    st = harness.eventually(lambda: pdb_status(node_cluster, ns, "max34", observedGeneration=1, currentHealthy=3),
                            timeout=30, what="max34's status")
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (3, 1, 2)
    table = node_cluster.kubectl("get", "pdb", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in table[1:]}
    assert rows == {"max34": ["N/A", "34%", "2"], "min2": ["2", "N/A", "1"]}
    node_cluster.kubectl("delete", "pdb", "max34", "-n", ns)


def test_drain_respects_the_budget_and_uncordon_lets_the_replacement_run(node_cluster, node_namespace):
    ns = node_namespace
    deploy(node_cluster, ns, "guarded")
    node_cluster.kubectl("apply", "-n", ns, "-f", "-",
                         input=pdb("guard", "guarded", "minAvailable: 2"))
    harness.eventually(lambda: pdb_status(node_cluster, ns, "guard", disruptionsAllowed=1, currentHealthy=3),
                       timeout=30, what="one disruption allowed")
    before = ready_pods(node_cluster, ns, "guarded")
    try:
        drain = node_cluster.kubectl("drain", NODE, "--pod-selector", "app=guarded", "--ignore-daemonsets",
                                     "--delete-emptydir-data", "--timeout=20s", check=False)
        # one eviction went through; the others were refused with the budget's 429 until the timeout
        assert drain.returncode != 0
        out = drain.stdout + drain.stderr
        assert "Cannot evict pod as it would violate the pod's disruption budget." in out, out
        assert out.count("evicted") == 1, out
        left = ready_pods(node_cluster, ns, "guarded")
        assert len(left) == 2 and set(left) < set(before)
        st = pdb_status(node_cluster, ns, "guard")
        assert (st["currentHealthy"], st["disruptionsAllowed"]) == (2, 0)
        pending = [p for p in get_json(node_cluster, "pods", "-n", ns, "-l", "app=guarded")["items"]
                   if p["status"].get("phase") == "Pending"]
        assert len(pending) == 1  # the replacement waits: the only node is cordoned
        # the eviction API itself, as kubectl drain uses it: 429 with the budget's cause
        victim = left[0]
        eviction = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                               "metadata": {"name": victim, "namespace": ns}})
        refused = node_cluster.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{victim}/eviction",
                                       "-f", "-", input=eviction, check=False)
        assert refused.returncode != 0
        assert "Cannot evict pod as it would violate the pod's disruption budget" in refused.stderr
    finally:
        node_cluster.kubectl("uncordon", NODE)
    harness.eventually(lambda: len(ready_pods(node_cluster, ns, "guarded")) == 3, timeout=90, interval=0.5,
                       what="the replacement Ready after uncordon")
    harness.eventually(lambda: pdb_status(node_cluster, ns, "guard", disruptionsAllowed=1, currentHealthy=3),
                       timeout=30, what="the budget back to one disruption")
