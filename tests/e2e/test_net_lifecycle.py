"""Service traffic through a pod's end of life, and what the network holds afterwards, in the shared
3-node cluster (issue 8, acceptance 6 and 11).

- Terminating pods stop receiving new connections: a pod that ignores SIGTERM stays Running for
  its grace period after ``kubectl delete``; its endpoint turns ``ready: false, terminating:
  true`` at once, and every new connection through the ClusterIP goes to the other pod.
- Leaks: on every node, count kube-proxy's per-service chains (iptables) and objects (nftables),
  the NetworkPolicy table's objects, the pod veths on the bridge and the routes, before a batch
  of Services (ClusterIP, NodePort, LoadBalancer, headless), pods on every node and a
  NetworkPolicy exist, while they exist (the counts must grow: the counting sees them) and after
  they are all deleted: back to the first counts or below (other tests' pods may still be going).
"""

from __future__ import annotations

import json
import re
import subprocess

import harness
from test_net_services import HTTPD, client_pod, from_pod, wait_balanced
from workloads import BUSYBOX, get_json, wait_pods

STUBBORN = ["sh", "-c", "trap '' TERM; mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www; "
            "while true; do sleep 1; done"]


def pod(name: str, app: str, command: list[str], *, node: str = "", grace: int = 1) -> str:
    spec = {"terminationGracePeriodSeconds": grace,
            "containers": [{"name": "web", "image": BUSYBOX, "command": command,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
    if node:
        spec["nodeName"] = node
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
                       "spec": spec})


def service(name: str, app: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": "http"}], **spec}})


def test_terminating_pod_gets_no_new_connections(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    nodes = sorted(c.state().nodes)
    c.kubectl("apply", "-n", ns, "-f", "-", input=pod("stays", "term", STUBBORN, node=nodes[0]))
    c.kubectl("apply", "-n", ns, "-f", "-", input=pod("goes", "term", STUBBORN, node=nodes[1], grace=60))
    c.kubectl("apply", "-n", ns, "-f", "-", input=client_pod())
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("term", "term"))
    wait_pods(c, ns, "app=term", 2, timeout=180)
    wait_pods(c, ns, "app=client", 1, timeout=180)
    url = f"http://{get_json(c, 'service', 'term', '-n', ns)['spec']['clusterIP']}/"
    harness.eventually(lambda: set(from_pod(c, ns, "client", url, 8)) == {"stays", "goes"}, timeout=60,
                       interval=1, what="both pods behind the ClusterIP")

    c.kubectl("delete", "pod", "goes", "-n", ns, "--wait=false")

    def endpoint_terminating() -> bool:
        slices = get_json(c, "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=term")["items"]
        eps = {e["targetRef"]["name"]: e["conditions"] for s in slices for e in s.get("endpoints") or []}
        return eps.get("goes", {}).get("terminating") is True and eps["goes"].get("ready") is False
    harness.eventually(endpoint_terminating, timeout=10, interval=0.2, what="the deleted pod's endpoint terminating")
    # still running (it ignores SIGTERM) ...
    assert get_json(c, "pod", "goes", "-n", ns)["status"]["phase"] == "Running"
    # ... but no new connection reaches it once kube-proxy has the change (its sync is ~1 s): wait on
    # every node's ruleset, not on a few answers (four random picks all "stays" is a 1-in-16 chance)
    wait_balanced(c, ns, "term", 1)
    answers = from_pod(c, ns, "client", url, 20)
    assert answers == ["stays"] * 20, answers
    assert get_json(c, "pod", "goes", "-n", ns)["metadata"].get("deletionTimestamp")
    # shorten its grace period and wait until it is gone, so that no container or veth of it outlives
    # the test (a forced delete drops the object at once while the node still runs the pod)
    c.kubectl("delete", "pod", "goes", "-n", ns, "--grace-period=1", "--timeout=120s", check=False)


def _node_counts(netns: str) -> dict[str, int]:
    def run(*argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                              check=True, timeout=30).stdout
    saved = run("iptables-save")
    ruleset = run("nft", "list", "ruleset")
    per_service = re.compile(r"^:KUBE-(SVC|SEP|EXT|FW|SVL)-", re.M)
    tables = re.findall(r"^table (\S+) (\S+) \{(.*?)^\}", ruleset, re.M | re.S)
    nft = {f"{fam} {name}": body for fam, name, body in tables}

    def objects(body: str) -> int:
        return len(re.findall(r"^\s*(chain|map|set|element|ip |tcp |udp |meta |ct |numgen |jump |goto )", body, re.M))
    return {
        "iptables service chains": len(per_service.findall(saved)),
        "iptables rules": sum(1 for line in saved.splitlines() if line.startswith("-A KUBE-")),
        "nftables kube-proxy objects": objects(nft.get("ip kube-proxy", "")),
        "netpol objects": objects(nft.get("ip kubeling-netpol", "")),
        "veths": len(run("ip", "-o", "link", "show", "type", "veth").splitlines()),
        "routes": len(run("ip", "route", "show", "table", "all").splitlines()),
    }


def _counts(c) -> dict[str, dict[str, int]]:
    return {name: _node_counts(node.netns) for name, node in c.state().nodes.items()}


NETPOL = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-clients}
spec:
  podSelector: {matchLabels: {app: leak}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
"""


def test_deleting_every_service_and_pod_leaves_nothing(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    nodes = sorted(c.state().nodes)

    def settled() -> bool:   # earlier tests' namespaces (and their pods, veths, rules) gone
        phases = [n["status"].get("phase") for n in get_json(c, "namespaces")["items"]]
        return "Terminating" not in phases
    harness.eventually(settled, timeout=120, interval=1, what="no namespace terminating")
    # the cluster's own services (kubernetes, kube-dns) programmed and the overlay's routes in
    # place on every node: the counts hold still over a few seconds
    seen = [_counts(c)]

    def steady() -> bool:
        seen.append(_counts(c))
        return seen[-1] == seen[-2] and all(v["iptables service chains"] > 0 for v in seen[-1].values())
    harness.eventually(steady, timeout=120, interval=3, what="the nodes' network state steady")
    before = seen[-1]
    for i, node in enumerate(nodes):
        c.kubectl("apply", "-n", ns, "-f", "-", input=pod(f"leak-{i}", "leak", HTTPD, node=node))
    c.kubectl("apply", "-n", ns, "-f", "-", input=client_pod())
    for name, spec in (("leak-cip", {}), ("leak-np", {"type": "NodePort"}), ("leak-lb", {"type": "LoadBalancer"}),
                       ("leak-aff", {"sessionAffinity": "ClientIP"}), ("leak-headless", {"clusterIP": "None"})):
        c.kubectl("apply", "-n", ns, "-f", "-", input=service(name, "leak", **spec))
    c.kubectl("apply", "-n", ns, "-f", "-", input=NETPOL)
    wait_pods(c, ns, "app=leak", len(nodes), timeout=180)
    wait_pods(c, ns, "app=client", 1, timeout=180)
    url = f"http://{get_json(c, 'service', 'leak-cip', '-n', ns)['spec']['clusterIP']}/"
    harness.eventually(lambda: len(set(from_pod(c, ns, "client", url, 6)) - {""}) >= 2, timeout=60, interval=1,
                       what="the services programmed")
    during = _counts(c)
    for node in nodes:
        for kind in ("iptables service chains", "veths"):
            assert during[node][kind] > before[node][kind], (node, kind, before[node], during[node])
    assert any(during[n]["netpol objects"] > before[n]["netpol objects"] for n in nodes), (before, during)

    c.kubectl("delete", "services,pods,networkpolicies", "--all", "-n", ns, "--grace-period=1")

    def back() -> bool:
        now = _counts(c)
        return all(now[n][k] <= before[n][k] for n in nodes for k in before[n])
    try:
        harness.eventually(back, timeout=60, interval=1, what="every node back to its counts")
    except AssertionError:
        raise AssertionError(f"left behind: before={before} now={_counts(c)}") from None
