"""The pod network across nodes (issue 8, acceptance 1): pods on three different nodes reach each
other by pod IP over flannel's VXLAN backend (the shared `multinode_cluster`) and over host-gw
routes (a private cluster made with ``--flannel-backend host-gw``), without masquerade between
pods; the control plane reaches every pod (``kubeling cluster routes``).

Each pod runs busybox httpd with a CGI script answering the client's address (``REMOTE_ADDR``),
so a reply names both the pod that answered and the address it saw."""

from __future__ import annotations

import json
import subprocess

import harness
import multinode
import pytest
import workloads

SCRIPT = """mkdir -p /www/cgi-bin
hostname > /www/index.html
head -c 300000 /dev/zero > /www/big
cat > /www/cgi-bin/ip <<'EOF'
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "$REMOTE_ADDR"
EOF
chmod +x /www/cgi-bin/ip
exec httpd -f -p 8080 -h /www
"""


def httpd_pod(name: str, node: str = "", labels: dict | None = None) -> str:
    """A busybox httpd pod (port 8080): ``/`` answers its hostname, ``/cgi-bin/ip`` the client's
    address. As JSON (which kubectl reads as YAML)."""
    spec = {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": "docker.io/library/busybox:latest", "command": ["sh", "-c", SCRIPT],
                            "ports": [{"name": "http", "containerPort": 8080}]}]}
    if node:
        spec["nodeName"] = node
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "labels": labels or {"app": "overlay"}}, "spec": spec})


def start_pods(cluster, ns: str) -> dict[str, dict]:
    """One httpd pod per node; name -> {node, ip}."""
    nodes = cluster.node_names()
    assert len(nodes) >= 3, nodes
    for i, node in enumerate(nodes[:3]):
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=httpd_pod(f"web-{i}", node))
    pods = workloads.wait_pods(cluster, ns, "app=overlay", 3, timeout=180)
    return {p["metadata"]["name"]: {"node": p["spec"]["nodeName"], "ip": p["status"]["podIP"]} for p in pods}


def fetch(cluster, ns: str, pod: str, url: str) -> str:
    # busybox 1.35's wget crashes (SIGSEGV) with -T: the timeout applet bounds it instead
    done = cluster.kubectl("exec", "-n", ns, pod, "--", "timeout", "10", "wget", "-q", "-O", "-", url, check=False,
                           timeout=30)
    assert done.returncode == 0, f"{pod} -> {url}: {done.stderr}"
    return done.stdout.strip()


def remote_addr(text: str) -> str:
    """httpd's REMOTE_ADDR (``[::ffff:10.42.0.2]``: it listens on an IPv6 socket) as IPv4."""
    return text.strip().strip("[]").removeprefix("::ffff:")


def check_mesh(cluster, ns: str, pods: dict[str, dict]) -> None:
    """Every pod reaches every other pod by pod IP, and sees the caller's own pod IP; a transfer
    of full-size packets gets through (the tunnel's smaller MTU is found by path MTU discovery)."""
    assert len({p["node"] for p in pods.values()}) == 3, pods
    (src, _), (_, d) = list(pods.items())[:2]
    done = cluster.kubectl("exec", "-n", ns, src, "--", "sh", "-c",
                           f"timeout 20 wget -q -O /tmp/big http://{d['ip']}:8080/big && wc -c < /tmp/big",
                           check=False, timeout=40)
    assert done.returncode == 0 and done.stdout.strip() == "300000", done.stdout + done.stderr
    for src, s in pods.items():
        for dst, d in pods.items():
            if src == dst:
                continue
            assert fetch(cluster, ns, src, f"http://{d['ip']}:8080/") == dst
            assert remote_addr(fetch(cluster, ns, src, f"http://{d['ip']}:8080/cgi-bin/ip")) == s["ip"], \
                "pod-to-pod traffic must not be masqueraded"


def node_netns(cluster, node: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{cluster.name}-{node}"]


def in_node(cluster, node: str, *argv: str) -> str:
    return subprocess.run([*node_netns(cluster, node), *argv], capture_output=True, text=True, check=True).stdout


def test_pods_on_three_nodes_reach_each_other_over_vxlan(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    pods = start_pods(c, ns)
    check_mesh(c, ns, pods)

    nodes = {n["metadata"]["name"]: n for n in workloads.get_json(c, "nodes")["items"]}
    for name, node in nodes.items():
        ann = node["metadata"]["annotations"]
        ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        assert ann["flannel.alpha.coreos.com/backend-type"] == "vxlan"
        assert ann["flannel.alpha.coreos.com/public-ip"] == ip
        assert ann["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"
        assert json.loads(ann["flannel.alpha.coreos.com/backend-data"])["VNI"] == 1
    # node-1's view: flannel.1 and, per peer, an onlink route, a permanent neighbour and an FDB entry
    me = "node-1"
    link = json.loads(in_node(c, me, "ip", "-d", "-j", "link", "show", "flannel.1"))[0]
    assert link["linkinfo"]["info_kind"] == "vxlan" and link["linkinfo"]["info_data"]["port"] == 8472
    routes = in_node(c, me, "ip", "route", "show", "dev", "flannel.1")
    fdb = in_node(c, me, "bridge", "fdb", "show", "dev", "flannel.1")
    for name, node in nodes.items():
        if name == me:
            continue
        cidr = node["spec"]["podCIDR"]
        mac = json.loads(node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
        ip = node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"]
        assert f"{cidr} via {cidr.split('/')[0]} proto 77 onlink" in routes, routes
        assert f"{mac} dst {ip} self permanent" in fdb, fdb

    # the control plane (the API server's namespace) reaches a pod on any node: pods/proxy
    for name, p in pods.items():
        raw = c.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}:8080/proxy/cgi-bin/ip")
        assert remote_addr(raw.stdout) == multinode.BRIDGE_IP, (name, raw.stdout)


def test_host_gw_backend_and_per_node_agent_flags(tmp_path, images_dir):
    """A private 3-node cluster with ``--flannel-backend host-gw``; node-2 alone gets a label
    through ``--node-agent-arg``."""
    c = multinode.MultiNodeCluster(tmp_path / "hostgw", images_dir=images_dir, nodes=3, flannel_backend="host-gw",
                                   node_agent_args={"node-2": ("--node-label=h1.kubeling.dev/only=node-2",)})
    try:
        try:
            c.start()
        except (harness.ServerNotReady, harness.CommandFailed) as e:
            pytest.fail(str(e), pytrace=False)
        labelled = c.kubectl("get", "nodes", "-l", "h1.kubeling.dev/only=node-2", "-o", "name").stdout.split()
        assert labelled == ["node/node-2"]
        ns = "hostgw"
        c.kubectl("create", "namespace", ns)
        harness.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
                           timeout=30, what="the default ServiceAccount")
        pods = start_pods(c, ns)
        check_mesh(c, ns, pods)
        nodes = {n["metadata"]["name"]: n for n in workloads.get_json(c, "nodes")["items"]}
        routes = in_node(c, "node-1", "ip", "route", "show", "proto", "77")
        for name in ("node-2", "node-3"):
            ip = next(a["address"] for a in nodes[name]["status"]["addresses"] if a["type"] == "InternalIP")
            assert f"{nodes[name]['spec']['podCIDR']} via {ip} dev eth0" in routes, routes
        assert subprocess.run([*node_netns(c, "node-1"), "ip", "link", "show", "flannel.1"],
                              capture_output=True).returncode != 0, "host-gw makes no VXLAN device"

        # a node joins (with a flag of its own): every node and the control plane route to it;
        # a node leaves: its routes go everywhere (level-triggered from the Node objects)
        c.cluster("node", "add", "node-4", "--agent-arg=--node-label=h1.kubeling.dev/added=yes")
        assert c.kubectl("get", "nodes", "-l", "h1.kubeling.dev/added=yes", "-o", "name").stdout.split() == \
            ["node/node-4"]
        cidr4 = harness.eventually(lambda: workloads.get_json(c, "node", "node-4")["spec"].get("podCIDR"),
                                   what="node-4's podCIDR")
        ip4 = c.state().nodes["node-4"].ip
        route4 = f"{cidr4} via {ip4} "
        harness.eventually(lambda: route4 in in_node(c, "node-1", "ip", "route", "show", "proto", "77"),
                           timeout=30, what="node-1's route to node-4's pods")
        outer = ["ip", "route", "show", "proto", "77"]
        harness.eventually(lambda: route4 in c.netns.exec(*outer).stdout, timeout=30,
                           what="the control plane's route to node-4's pods")
        c.cluster("node", "remove", "node-4")
        harness.eventually(lambda: route4 not in in_node(c, "node-1", "ip", "route", "show", "proto", "77"),
                           timeout=30, what="node-1's route to node-4's pods gone")
        harness.eventually(lambda: route4 not in c.netns.exec(*outer).stdout, timeout=30,
                           what="the control plane's route to node-4's pods gone")
    finally:
        c.destroy()      # checks that nothing leaked (and `cluster down` that flannel.1 is gone)
