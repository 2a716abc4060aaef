"""``kubeling cluster up --control-planes 3 --nodes 2 --datastore etcd`` (issue 11, operating it).

One cluster for the whole module (tests/e2e/multinode.py, etcd layout): three control-plane
namespaces on the bridge, each with an etcd member (Debian's etcd) and a ``kubeling server`` on
all three members, and two node agents. Clients run in the outer namespace the test made.

- every node Ready, every server ready, every member healthy (``cluster status``);
- ``etcdctl member list`` inside a control plane's namespace: three started members, and the
  cluster's objects under ``/registry/``;
- ``kubectl`` through each server's own kubeconfig, each seeing what the others wrote;
- a Deployment of 2 (nginx from the test registry) runs a pod on each node; its pods answer on
  their pod IPs from the outer namespace and from every control plane's (the API servers reach
  pods), and ``kubectl logs`` and ``exec`` work through another server than the one that made it;
- ``cluster etcd kill`` of the etcd leader: writes through every server still succeed (the time
  to the first success is printed), and ``etcd start`` brings the member back into the cluster;
- ``cluster server stop``/``start``: the others serve meanwhile, and it comes back ready;
- ``cluster down`` leaves nothing (namespaces, processes, mounts, cgroups, links): the last test.
"""

from __future__ import annotations

import json
import sys
import time

import harness
import multinode
import pytest

NODES = 2
SERVERS = ("server-1", "server-2", "server-3")

WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                 "terminationGracePeriodSeconds": 1,
                 # one pod per node
                 "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                "whenUnsatisfiable": "DoNotSchedule",
                                                "labelSelector": {"matchLabels": {"app": "web"}}}],
                 "containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}],
                                 "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1}}]}}}}

GET = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except OSError as e:
    print("FAILED", e)
"""


NO_CERT = """
import ssl, sys, urllib.request
url, ca = sys.argv[1], sys.argv[2]
for attempt in (url, url.replace("https://", "http://")):
    try:
        urllib.request.urlopen(attempt + "/v3/kv/range", data=b'{"key": "Lw=="}', timeout=5,
                               context=ssl.create_default_context(cafile=ca))
        print("answered")
    except OSError as e:
        print("refused")
"""


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory, images_dir):
    started = time.monotonic()
    # destroy() is idempotent: test_down_leaves_nothing did it already when it ran
    with multinode.running(tmp_path_factory.mktemp("ha-cluster"), images_dir=images_dir, nodes=NODES,
                           control_planes=len(SERVERS), datastore="etcd", startup_timeout=300) as c:
        print(f"\n[ha-cluster] cluster up --control-planes 3 --nodes 2 --datastore etcd: "
              f"{time.monotonic() - started:.1f}s")
        yield c


@pytest.fixture(scope="module")
def ns(ha_cluster):
    name = "ha-cluster"
    ha_cluster.kubectl("create", "namespace", name)
    harness.eventually(lambda: ha_cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                                                  check=False).returncode == 0,
                       timeout=60, what=f"the default ServiceAccount in {name}")
    return name


def status(c) -> dict[str, list[str]]:
    """``kubeling cluster status``: name -> [address, pid, ready, link]."""
    lines = c.cluster("status").stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[1:] for line in lines}


def members(c, server: str = "server-1") -> list[dict]:
    return json.loads(c.etcdctl(server, "member", "list", "-w", "json").stdout).get("members") or []


def leader_member(c) -> str:
    """The name of the etcd leader (etcd-<i>), from ``etcdctl endpoint status``."""
    out = json.loads(c.etcdctl("server-1", "endpoint", "status", "-w", "json").stdout)
    leader = next(e["Status"]["leader"] for e in out)
    return next(m["name"] for m in members(c) if m["ID"] == leader)


def test_every_node_server_and_member_is_up(ha_cluster):
    c = ha_cluster
    st = c.state()
    assert st.datastore == "etcd" and list(st.control_planes) == list(SERVERS)
    assert list(st.nodes) == ["node-1", "node-2"]
    c.wait_nodes_ready(timeout=120)
    addresses = {cp.ip for cp in st.control_planes.values()} | {n.ip for n in st.nodes.values()}
    assert len(addresses) == len(SERVERS) + NODES and multinode.BRIDGE_IP not in addresses
    rows = status(c)
    for name, cp in st.control_planes.items():
        assert rows[name][0] == f"https://{cp.ip}:{st.secure_port}" and rows[name][2:] == ["True", "up"]
        assert rows[cp.etcd_name][0] == f"https://{cp.ip}:2379" and rows[cp.etcd_name][2:] == ["True", "up"]
    for name in st.nodes:
        assert rows[name][2:] == ["True", "up"]


def test_etcd_has_three_started_members_holding_the_cluster(ha_cluster):
    c = ha_cluster
    st = c.state()
    for server in SERVERS:     # the same view from every control plane's namespace
        listed = members(c, server)
        assert sorted(m["name"] for m in listed) == ["etcd-1", "etcd-2", "etcd-3"]   # a name: started
        assert sorted(u for m in listed for u in m["clientURLs"]) == sorted(
            cp.etcd_url for cp in st.control_planes.values())
    # the table form an operator reads
    table = c.etcdctl("server-2", "member", "list").stdout.splitlines()
    assert len(table) == 3 and all(", started, etcd-" in line for line in table)
    keys = c.etcdctl("server-3", "get", "--prefix", "--keys-only", "/registry/").stdout.split()
    assert any(k.endswith("/nodes/node-1") for k in keys) and any(k.endswith("/nodes/node-2") for k in keys)
    # TLS with client certificates: from a node's namespace (where pods' packets pass), no
    # certificate, no data; plain HTTP is not spoken at all
    url = st.control_planes["server-1"].etcd_url
    refused = c.in_netns(st.nodes["node-1"].netns, sys.executable, "-c", NO_CERT, url,
                         str(c.cluster_dir / "etcd" / "pki" / "ca.crt")).stdout
    assert refused.split() == ["refused", "refused"], (url, refused)
    # the members listen on the control plane's address and loopback only
    cp = st.control_planes["server-1"]
    listening = c.in_netns(cp.netns, "ss", "-Hltn").stdout.split("\n")
    etcd_addresses = {line.split()[3] for line in listening if line.split() and
                      line.split()[3].rsplit(":", 1)[1] in ("2379", "2380")}
    assert etcd_addresses == {f"{cp.ip}:2379", f"{cp.ip}:2380", "127.0.0.1:2379"}


def test_kubectl_through_every_server(ha_cluster, ns):
    c = ha_cluster
    for server in SERVERS:
        nodes = c.server_kubectl(server, "get", "nodes", "-o", "name").stdout.split()
        assert sorted(nodes) == ["node/node-1", "node/node-2"]
        c.server_kubectl(server, "create", "configmap", f"from-{server}", "-n", ns, f"--from-literal=by={server}")
    for server in SERVERS:    # every server sees what every other one wrote
        listed = json.loads(c.server_kubectl(server, "get", "configmaps", "-n", ns, "-o", "json").stdout)
        made = {i["metadata"]["name"]: i["data"]["by"] for i in listed["items"] if i["metadata"]["name"].startswith("from-")}
        assert made == {f"from-{s}": s for s in SERVERS}
    # the kubernetes Service's endpoints name every server
    eps = json.loads(c.server_kubectl("server-2", "get", "endpoints", "kubernetes", "-n", "default",
                                      "-o", "json").stdout)
    st = c.state()
    addresses = sorted(a["ip"] for s in eps["subsets"] for a in s["addresses"])
    assert addresses == sorted(cp.ip for cp in st.control_planes.values())


def test_deployment_on_both_nodes_reachable_by_pod_ip(ha_cluster, ns):
    c = ha_cluster
    st = c.state()
    c.server_kubectl("server-1", "apply", "-n", ns, "-f", "-", input=json.dumps(WEB))
    pods = c.wait_pods(ns, "app=web", lambda ps: len(ps) == 2 and all(multinode.running_and_ready(p) for p in ps),
                       timeout=240, what="the two web pods Running and Ready")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2"]
    ips = [p["status"]["podIP"] for p in pods]
    # from the outer namespace (where `cluster up` ran: its routes helper) and from every control
    # plane's (each API server's own routes helper)
    where = [("outer", c.netns.name)] + [(name, cp.netns) for name, cp in st.control_planes.items()]
    for label, netns in where:
        for ip in ips:
            def answers(ip=ip, netns=netns):
                out = c.in_netns(netns, sys.executable, "-c", GET, f"http://{ip}/", check=False).stdout
                return "Welcome to nginx" in out
            harness.eventually(answers, timeout=30, interval=1, what=f"nginx on {ip} from {label}")
    # the servers reach the kubelets: logs and exec through servers other than the creator
    pod = pods[0]["metadata"]["name"]
    logs = c.server_kubectl("server-2", "logs", "-n", ns, pod).stdout
    assert "GET / HTTP" in logs
    out = c.server_kubectl("server-3", "exec", "-n", ns, pod, "--", "cat", "/etc/nginx/nginx.conf").stdout
    assert "http {" in out


def test_killing_the_etcd_leader_keeps_writes_working(ha_cluster, ns):
    c = ha_cluster
    leader = leader_member(c)
    c.cluster("etcd", "kill", leader)
    killed = time.monotonic()
    try:
        assert status(c)[leader][1:3] == ["-", "-"]
        firsts = {}
        for server in SERVERS:
            def write(server=server):
                done = c.server_kubectl(server, "create", "configmap", f"after-kill-{server}", "-n", ns,
                                        "--request-timeout=20s", check=False, timeout=40)
                return done.returncode == 0 or "AlreadyExists" in done.stderr
            harness.eventually(write, timeout=90, interval=0.5, what=f"a write through {server} with {leader} dead")
            firsts[server] = time.monotonic() - killed
        print(f"\n[ha-cluster] {leader} (the etcd leader) killed: first write through each server after "
              + ", ".join(f"{s} {t:.1f}s" for s, t in firsts.items()))
        names = c.kubectl("get", "configmaps", "-n", ns, "-o", "name").stdout.split()
        assert {f"configmap/after-kill-{s}" for s in SERVERS} <= set(names)
        remaining = [m["name"] for m in members(c, "server-1" if leader != "etcd-1" else "server-2")]
        assert sorted(remaining) == ["etcd-1", "etcd-2", "etcd-3"]    # killed, not removed
    finally:
        c.cluster("etcd", "start", leader)
    rows = status(c)
    assert rows[leader][2] == "True"
    # it caught up: its own copy of the keys holds what was written while it was dead
    cp = next(cp for cp in c.state().control_planes.values() if cp.etcd_name == leader)
    def caught_up():
        got = c.etcdctl(cp.name, "get", "--prefix", "--keys-only", "--consistency=s", "/registry/",
                        endpoints=cp.etcd_url, check=False).stdout
        return all(any(k.endswith(f"/{ns}/after-kill-{s}") for k in got.split()) for s in SERVERS)
    harness.eventually(caught_up, timeout=60, interval=1, what=f"{leader} caught up")


def test_server_stop_and_start(ha_cluster, ns):
    c = ha_cluster
    c.cluster("server", "stop", "server-3")
    try:
        assert status(c)["server-3"][1:3] == ["-", "-"]
        c.server_kubectl("server-2", "create", "configmap", "while-server-3-stopped", "-n", ns)
        assert c.server_kubectl("server-3", "get", "nodes", check=False, timeout=30).returncode != 0
    finally:
        c.cluster("server", "start", "server-3")
    assert status(c)["server-3"][2] == "True"
    c.server_kubectl("server-3", "get", "configmap", "while-server-3-stopped", "-n", ns)
    c.wait_nodes_ready(timeout=120)


def test_down_leaves_nothing(ha_cluster):
    """Last in the module: ``kubeling cluster down``, then `leaks` (destroy asserts none)."""
    c = ha_cluster
    st = c.state()
    pids = [p for cp in st.control_planes.values() for p in (cp.pid, cp.etcd_pid, cp.routes_pid)]
    assert all(pids)
    netns = [cp.netns for cp in st.control_planes.values()] + [n.netns for n in st.nodes.values()]
    c.destroy()
    assert not any(c.leaks().values())
    listed = harness_netns()
    assert not set(netns) & listed
    from kubeling.cluster.cluster import _cmdline
    assert not [p for p in pids if str(c.cluster_dir) in _cmdline(p)]


def harness_netns() -> set[str]:
    import subprocess
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}
