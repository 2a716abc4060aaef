"""Multi-node on one machine (issue 7): ``kubeling cluster`` with three agents, each in its own
network namespace, driven with real kubectl through the API server (`multinode_cluster`).

Node failure (acceptance 3) and drain (10) are the node lifecycle's tests; here a broken node is
mended before its test ends, so the shared cluster always has node-1..node-3 Ready.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import harness
from multinode import running_and_ready
from workloads import daemonset

PINNED = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: pinned}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: ["/bin/sh", "-c", "echo hello from $(hostname) on {node}; sleep 3600"]
"""


def _pin(cluster, namespace: str, name: str, node: str, image: str = "busybox", policy: str = "IfNotPresent"):
    cluster.kubectl("create", "-n", namespace, "-f", "-",
                    input=PINNED.format(name=name, node=node, image=image, policy=policy))


def _in_node(cluster, node: str, code: str) -> subprocess.CompletedProcess:
    """Python ``code`` run inside a node's network namespace."""
    ns = cluster.state().nodes[node].netns
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, check=False)


REACH_SERVER = ("import socket,sys; s=socket.socket(); s.settimeout(2)\n"
                "try: s.connect((sys.argv[1], int(sys.argv[2]))); print('reached')\n"
                "except OSError as e: print('unreachable', e)\n")


def _reaches_server(cluster, node: str) -> bool:
    st = cluster.state()
    out = _in_node(cluster, node, f"import sys; sys.argv=['', '{st.server_ip}', '{st.secure_port}']\n"
                   + REACH_SERVER).stdout
    return out.startswith("reached")


def test_three_nodes_ready_with_their_own_addresses(multinode_cluster):
    st = multinode_cluster.state()
    assert list(st.nodes) == ["node-1", "node-2", "node-3"]
    wide = multinode_cluster.kubectl("get", "nodes", "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    rows = {line.split()[0]: dict(zip(header, line.split())) for line in wide[1:]}
    assert sorted(rows) == ["node-1", "node-2", "node-3"]
    for name, node in st.nodes.items():
        assert rows[name]["STATUS"] == "Ready"
        assert rows[name]["INTERNAL-IP"] == node.ip
    assert len({n.ip for n in st.nodes.values()}) == 3
    assert len({n.netns for n in st.nodes.values()}) == 3
    # every node got its own pod CIDR, and its agent runs in its own namespace with its own cgroup root
    listed = json.loads(multinode_cluster.kubectl("get", "nodes", "-o", "json").stdout)
    assert len({n["spec"]["podCIDR"] for n in listed["items"]}) == 3
    status = multinode_cluster.cluster("status").stdout
    for name, node in st.nodes.items():
        line = next(row for row in status.splitlines() if row.startswith(name))
        assert node.ip in line and str(node.pid) in line and line.split()[-2:] == ["True", "up"]


def _netns_of(pid: int) -> int:
    import os
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _netns_of_name(name: str) -> int:
    import os
    return os.stat(f"/run/netns/{name}").st_ino


def test_agents_run_in_their_node_namespaces(multinode_cluster):
    st = multinode_cluster.state()
    for node in st.nodes.values():
        assert _netns_of(node.pid) == _netns_of_name(node.netns), node.name
    assert _netns_of(st.server_pid) == _netns_of_name(multinode_cluster.netns.name)


def test_pods_on_every_node_run_and_stream_through_the_api_server(multinode_cluster, multinode_namespace):
    """A pod pinned to each node runs there; logs and exec reach each agent through the API
    server, over the bridge, from the host."""
    ns = multinode_namespace
    names = multinode_cluster.node_names()
    for node in names:
        _pin(multinode_cluster, ns, f"on-{node}", node)
    pods = multinode_cluster.wait_pods(ns, "app=pinned", lambda ps: len(ps) == 3 and all(map(running_and_ready, ps)),
                                       what="a Running pod on each node")
    st = multinode_cluster.state()
    for pod in pods:
        node = pod["spec"]["nodeName"]
        assert pod["status"]["hostIP"] == st.nodes[node].ip
        name = pod["metadata"]["name"]
        logs = harness.eventually(lambda n=name: multinode_cluster.kubectl("logs", n, "-n", ns).stdout,
                                  what=f"logs of {name}")
        assert f"hello from {name} on {node}" in logs
        out = multinode_cluster.kubectl("exec", name, "-n", ns, "--", "cat", "/etc/hostname").stdout
        assert out.strip() == name
    wide = multinode_cluster.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout
    for node in names:
        assert any(line.split()[0] == f"on-{node}" and node in line.split() for line in wide.splitlines())


def test_a_wrong_join_token_is_refused(multinode_cluster, tmp_path):
    """An agent with another cluster's CA hash, or a wrong secret, gets no identity."""
    st = multinode_cluster.state()
    token = (multinode_cluster.cluster_dir / "server" / "server" / "node-token").read_text().strip()
    prefix, _, secret = token.rpartition(":")
    cases = {
        "K10" + "0" * 64 + "::server:" + secret: "the token expects 0000",
        prefix + ":not-the-secret": "401 Unauthorized",
    }
    for bad, message in cases.items():
        done = multinode_cluster.kubeling("agent", "--server", st.server_url, "--token", bad, "--data-dir",
                                          str(tmp_path / "intruder"), "--node-name", "intruder", check=False,
                                          timeout=60)
        assert done.returncode == 1
        assert message in done.stderr, done.stderr
        assert not (tmp_path / "intruder" / "agent" / "kubelet.kubeconfig").exists()
    got = multinode_cluster.kubectl("get", "node", "intruder", check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr


def test_node_stop_kills_agent_and_containers_and_start_brings_it_back(multinode_cluster, multinode_namespace):
    ns = multinode_namespace
    _pin(multinode_cluster, ns, "victim", "node-3")
    pod = multinode_cluster.wait_pods(ns, "app=pinned", lambda ps: ps and running_and_ready(ps[0]))[0]
    container_pid = _container_pid(multinode_cluster, "node-3", pod)
    old_agent = multinode_cluster.state().nodes["node-3"].pid
    try:
        multinode_cluster.cluster("node", "stop", "node-3")
        node = multinode_cluster.state().nodes["node-3"]
        assert node.pid == 0
        assert not _pid_alive(old_agent) and not _pid_alive(container_pid)
        status = multinode_cluster.cluster("status").stdout
        assert next(r for r in status.splitlines() if r.startswith("node-3")).split()[2] == "-"
    finally:
        multinode_cluster.cluster("node", "start", "node-3")
    assert multinode_cluster.state().nodes["node-3"].pid not in (0, old_agent)
    multinode_cluster.wait_nodes_ready(["node-3"])
    # the agent finds its container dead and runs it again
    multinode_cluster.wait_pods(ns, "app=pinned", lambda ps: running_and_ready(ps[0]) and sum(
        c.get("restartCount", 0) for c in ps[0]["status"]["containerStatuses"]) >= 1, timeout=120,
        what="the pod restarted on node-3")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _container_pid(cluster, node: str, pod: dict) -> int:
    """The PID of the pod's container process, from runc's state in the node's agent root."""
    root = cluster.cluster_dir / "nodes" / node / "agent" / "runc"
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    out = subprocess.run(["runc", "--root", str(root), "state", cid], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["pid"]


def test_isolate_cuts_a_node_off_and_connect_mends_it(multinode_cluster):
    assert _reaches_server(multinode_cluster, "node-2")
    try:
        multinode_cluster.cluster("node", "isolate", "node-2")
        assert multinode_cluster.state().nodes["node-2"].isolated
        assert not _reaches_server(multinode_cluster, "node-2")
        assert _reaches_server(multinode_cluster, "node-1")
        line = next(r for r in multinode_cluster.cluster("status").stdout.splitlines() if r.startswith("node-2"))
        assert line.split()[-1] == "cut"
    finally:
        multinode_cluster.cluster("node", "isolate", "node-2", "--undo")
    # the carrier comes back and ARP is asked again (the isolated tries left FAILED neighbours)
    harness.eventually(lambda: _reaches_server(multinode_cluster, "node-2"), timeout=20, interval=0.5,
                       what="node-2 reaching the server again")
    multinode_cluster.wait_nodes_ready(["node-2"])


def test_images_import_reaches_every_node(multinode_cluster, multinode_namespace, images_dir, tmp_path):
    """``kubeling images import --data-dir <cluster>`` (kind load): an image no registry has runs
    on every node with imagePullPolicy Never."""
    image = "example.com/kubeling-e2e/imported:m1"
    layout = tmp_path / "layout"
    subprocess.run(["cp", "-r", str(images_dir / "busybox"), str(layout)], check=True)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = image
    (layout / "index.json").write_text(json.dumps(index))
    archive = tmp_path / "imported.tar"
    with tarfile.open(archive, "w") as tar:
        for item in layout.iterdir():
            tar.add(item, arcname=item.name)
    out = multinode_cluster.kubeling("images", "import", "--data-dir", str(multinode_cluster.cluster_dir),
                                     str(archive)).stdout
    assert sorted(line.rsplit(" ", 1)[1] for line in out.splitlines()) == ["node-1", "node-2", "node-3"]
    for node in multinode_cluster.node_names():
        _pin(multinode_cluster, multinode_namespace, f"imported-{node}", node, image=image, policy="Never")
    multinode_cluster.wait_pods(multinode_namespace, "app=pinned",
                                lambda ps: len(ps) == 3 and all(map(running_and_ready, ps)),
                                what="the imported image running on each node")



def test_deployment_of_three_lands_one_pod_on_each_node(multinode_cluster, multinode_namespace):
    """Acceptance 1: the scheduler spreads one owner's replicas across hosts (the default
    topology spread), and ``kubectl get pods -o wide`` shows names, nodes and Ready."""
    ns = multinode_namespace
    multinode_cluster.kubectl("create", "deployment", "web", "-n", ns, "--image=busybox", "--replicas=3",
                              "--", "sleep", "3600")
    pods = multinode_cluster.wait_pods(ns, "app=web", lambda ps: len(ps) == 3 and all(map(running_and_ready, ps)),
                                       timeout=180, what="3 Running and Ready replicas")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]
    multinode_cluster.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    wide = multinode_cluster.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    rows = {line.split()[0]: line.split() for line in wide[1:]}
    assert sorted(rows) == sorted(p["metadata"]["name"] for p in pods)
    for pod in pods:
        row = rows[pod["metadata"]["name"]]
        assert row[0].startswith("web-")
        assert row[1:3] == ["1/1", "Running"]
        assert row[5] == pod["status"]["podIP"] and row[6] == pod["spec"]["nodeName"]
    assert len({row[6] for row in rows.values()}) == 3


def test_daemonset_covers_a_node_added_later(multinode_cluster, multinode_namespace):
    """Acceptance 6, second half: ``kubeling cluster node add`` joins node-4 to the running
    cluster, and the DaemonSet puts a pod there."""
    ns = multinode_namespace
    multinode_cluster.kubectl("create", "-n", ns, "-f", "-", input=daemonset("everywhere", image="busybox"))
    pods = multinode_cluster.wait_pods(ns, "app=everywhere",
                                       lambda ps: len(ps) == 3 and all(map(running_and_ready, ps)), timeout=180,
                                       what="a DaemonSet pod Running on each of the 3 nodes")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]
    try:
        multinode_cluster.cluster("node", "add", "node-4")
        assert multinode_cluster.node_ready().get("node-4") == "True"
        pods = multinode_cluster.wait_pods(ns, "app=everywhere",
                                           lambda ps: len(ps) == 4 and all(map(running_and_ready, ps)), timeout=180,
                                           what="the DaemonSet's pod on node-4")
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3", "node-4"]
        multinode_cluster.kubectl("rollout", "status", "daemonset/everywhere", "-n", ns, "--timeout=60s")
        status = json.loads(multinode_cluster.kubectl("get", "daemonset", "everywhere", "-n", ns, "-o", "json"
                                                      ).stdout)["status"]
        assert status["desiredNumberScheduled"] == 4 and status["numberReady"] == 4
    finally:
        multinode_cluster.cluster("node", "remove", "node-4")
    assert "node-4" not in multinode_cluster.node_ready()
    assert multinode_cluster.node_names() == ["node-1", "node-2", "node-3"]
    assert not any(n.endswith("-node-4") for n in multinode_cluster.leaks()["netns"])
