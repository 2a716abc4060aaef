"""The pod network on one node (issue 6): pod-to-pod over the bridge, hostPort and hostNetwork.

Traffic stays inside the cluster's network namespace: curl runs there (`netns.exec`), and the
node's address is the namespace's end of the harness's veth.
"""

from __future__ import annotations

import harness

WEB = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: kl-node
  hostNetwork: {host_network}
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p {port} -h /www"]
    ports: [{{containerPort: {port}{host_port}}}]
"""


def web(name: str, port: int, host_port: int | None = None, host_network: bool = False) -> str:
    return WEB.format(name=name, port=port, host_network=str(host_network).lower(),
                      host_port=f", hostPort: {host_port}" if host_port else "")


def running(p: dict) -> bool:
    return p["status"].get("phase") == "Running" and bool(p["status"].get("podIP"))


def curl(cluster, url: str) -> str:
    return harness.eventually(lambda: cluster.netns.exec("curl", "-s", "--max-time", "3", url,
                                                         check=False).stdout.strip(),
                              timeout=20, what=f"an answer from {url}")


def test_pods_reach_each_other_and_the_node_reaches_them(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web("a", 8080))
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web("b", 8080))
    a = node_cluster.wait_pod(ns, "a", running)
    b = node_cluster.wait_pod(ns, "b", running)
    assert a["status"]["podIP"] != b["status"]["podIP"]
    assert a["status"]["podIP"].startswith("10.42.")
    assert curl(node_cluster, f"http://{b['status']['podIP']}:8080/") == "b"
    got = harness.eventually(lambda: node_cluster.kubectl(
        "exec", "-n", ns, "a", "--", "wget", "-qO-", f"http://{b['status']['podIP']}:8080/",
        check=False).stdout.strip(), timeout=20, what="pod a reaching pod b")
    assert got == "b"


def test_host_port_reaches_the_pod(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web("hp", 8080, host_port=18080))
    node_cluster.wait_pod(ns, "hp", running)
    assert curl(node_cluster, f"http://{node_cluster.netns.ns_ip}:18080/") == "hp"
    node_cluster.kubectl("delete", "pod", "hp", "-n", ns, "--wait=true", "--timeout=60s")
    gone = node_cluster.netns.exec("curl", "-s", "--max-time", "2", f"http://{node_cluster.netns.ns_ip}:18080/",
                                   check=False)
    assert gone.returncode != 0, "the hostPort rule outlived its pod"


def test_host_network_pod_uses_the_node_address(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web("hn", 18081, host_network=True))
    pod = node_cluster.wait_pod(ns, "hn", running)
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == node_cluster.netns.ns_ip
    assert curl(node_cluster, f"http://{node_cluster.netns.ns_ip}:18081/") == "hn"
    links = node_cluster.kubectl("exec", "-n", ns, "hn", "--", "ip", "-o", "link").stdout
    assert "kubeling0" in links          # the node's own interfaces, the pod bridge among them
