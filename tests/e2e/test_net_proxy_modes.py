"""kube-proxy's userspace and nftables modes in a real cluster (issue 8, acceptance 2 and 11 for
these modes; the iptables mode is the shared cluster's, `test_net_services`): a private 2-node
cluster whose node-1 runs ``kubeling proxy --proxy-mode=userspace`` and node-2
``--proxy-mode=nftables`` (a node's mode is its own: traffic is proxied on the client's node).

Three httpd pods on both nodes answer their hostname. 30 new connections through the ClusterIP
from a pod on node-1 hit each exactly 10 times (true round robin); from a pod on node-2 they hit
every pod. ClientIP affinity sticks in both modes; a NodePort answers from the test host on both
nodes' IPs; deleting the Service leaves no rule of it on either node."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import harness
import multinode
import pytest
import workloads

SCRIPT = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def pod(name: str, node: str, labels: dict, command: list[str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                       "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                                "containers": [{"name": "c", "image": "docker.io/library/busybox:latest",
                                                "command": command, "ports": [{"containerPort": 8080}]}]}})


SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: rr}}
  sessionAffinity: {affinity}
  ports: [{{port: 80, targetPort: 8080}}]
"""


@pytest.fixture(scope="module")
def userspace_cluster(tmp_path_factory, images_dir):
    with multinode.running(tmp_path_factory.mktemp("proxymodes"), images_dir=images_dir, nodes=2,
                           node_agent_args={"node-1": ("--kube-proxy-arg=proxy-mode=userspace",),
                                            "node-2": ("--kube-proxy-arg=proxy-mode=nftables",)}) as c:
        yield c


def _loop(cluster, ns: str, url: str, n: int, client: str = "client") -> list[str]:
    script = f"for i in $(seq {n}); do timeout 5 wget -q -O - {url} || echo FAIL; done"
    done = cluster.kubectl("exec", "-n", ns, client, "--", "sh", "-c", script, timeout=30 + 6 * n)
    return done.stdout.split()


def test_userspace_and_nftables_round_robin_affinity_nodeport_and_cleanup(userspace_cluster):
    c = userspace_cluster
    ns = "userspace"
    c.kubectl("create", "namespace", ns)
    harness.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
                       timeout=30, what="the default ServiceAccount")
    state = c.state()
    nodes = sorted(state.nodes)
    for i in range(3):
        c.kubectl("apply", "-n", ns, "-f", "-", input=pod(f"web-{i}", nodes[i % 2], {"app": "rr"}, ["sh", "-c", SCRIPT]))
    c.kubectl("apply", "-n", ns, "-f", "-", input=pod("client", nodes[0], {"app": "client"}, ["sleep", "3600"]))
    c.kubectl("apply", "-n", ns, "-f", "-", input=pod("client-nft", nodes[1], {"app": "client"}, ["sleep", "3600"]))
    workloads.wait_pods(c, ns, "app=rr", 3, timeout=180)
    workloads.wait_pods(c, ns, "app=client", 2, timeout=180)
    c.kubectl("apply", "-n", ns, "-f", "-", input=SERVICE.format(affinity="None"))
    svc = workloads.get_json(c, "service", "web", "-n", ns)
    vip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    url = f"http://{vip}/"

    # the proxy has all three endpoints once a few connections reach all three pods
    harness.eventually(lambda: len(set(_loop(c, ns, url, 6)) - {"FAIL"}) == 3, timeout=60, interval=1,
                       what="the service reaching all 3 pods")
    hits = collections.Counter(_loop(c, ns, url, 30))
    assert hits == {"web-0": 10, "web-1": 10, "web-2": 10}, hits
    # nftables (numgen random): every pod is hit
    harness.eventually(lambda: len(set(_loop(c, ns, url, 6, "client-nft")) - {"FAIL"}) >= 2, timeout=60,
                       interval=1, what="the nftables node reaching the service")
    hits = collections.Counter(_loop(c, ns, url, 30, "client-nft"))
    assert set(hits) == {"web-0", "web-1", "web-2"}, hits

    # NodePort from the test host, on both nodes' addresses (one of them runs one pod only)
    for node in nodes:
        ip = state.nodes[node].ip
        got = collections.Counter()
        for _ in range(3):
            r = subprocess.run([*c.netns.prefix(), sys.executable, "-c",
                                f"import urllib.request; print(urllib.request.urlopen('http://{ip}:{node_port}/', "
                                "timeout=5).read().decode().strip())"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            got[r.stdout.strip()] += 1
        assert set(got) <= {"web-0", "web-1", "web-2"} and sum(got.values()) == 3, got

    # ClientIP affinity: the client sticks to one pod
    c.kubectl("apply", "-n", ns, "-f", "-", input=SERVICE.format(affinity="ClientIP"))
    for client in ("client", "client-nft"):
        harness.eventually(lambda: len(set(_loop(c, ns, url, 10, client))) == 1, timeout=60, interval=1,
                           what=f"ClientIP affinity in force for {client}")
        assert len(set(_loop(c, ns, url, 10, client)) - {"FAIL"}) == 1

    # deleting the Service removes its rules on every node (the comment names the service)
    c.kubectl("delete", "service", "web", "-n", ns)

    def no_rules() -> bool:
        for node in nodes:
            for argv in (["iptables-save", "-t", "nat"], ["nft", "list", "ruleset"]):
                saved = subprocess.run(["ip", "netns", "exec", state.nodes[node].netns, *argv],
                                       capture_output=True, text=True, check=True).stdout
                if f"{ns}/web" in saved:
                    return False
        return True
    harness.eventually(no_rules, timeout=30, interval=0.5, what="the service's rules gone from every node")
    c.kubectl("delete", "namespace", ns, "--wait=false", check=False)
