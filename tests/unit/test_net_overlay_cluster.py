"""``kubeling cluster`` and the overlay: the flannel backend, per-node agent flags and the routes
process in the state file and in the agent's command line (no process is started)."""

from __future__ import annotations

import json
from dataclasses import asdict

from kubeling.cli.main import main as kubeling_main
from kubeling.cluster import cluster as cl


def test_state_keeps_backend_node_flags_and_routes_pid(tmp_path):
    c = cl.Cluster(tmp_path)
    c.state = cl.ClusterState(name="t", data_dir=str(tmp_path), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1", agent_args=["--a"], node_agent_args={"node-2": ["--b"]},
                              flannel_backend="host-gw", routes_pid=0)
    c.save()
    again = cl.Cluster(tmp_path).load()
    assert asdict(again) == asdict(c.state)
    assert again.flannel_backend == "host-gw" and again.node_agent_args == {"node-2": ["--b"]}


def test_an_older_state_file_loads_with_defaults(tmp_path):
    doc = {"name": "t", "data_dir": str(tmp_path), "subnet": "10.44.3.0/24", "bridge": "kl-t",
           "server_ip": "10.44.3.1",
           "nodes": {"node-1": {"name": "node-1", "ip": "10.44.3.2", "netns": "t-node-1", "veth": "klvx",
                                "data_dir": str(tmp_path / "nodes" / "node-1"), "cgroup_root": "kubeling-t-node-1"}}}
    (tmp_path / "cluster.json").write_text(json.dumps(doc))
    st = cl.Cluster(tmp_path).load()
    assert st.flannel_backend == "vxlan" and st.routes_pid == 0 and st.nodes["node-1"].agent_args == []


def test_agent_command_line_order(tmp_path, monkeypatch):
    """--flannel-backend, then the cluster's --agent-arg flags, then the node's own (last wins)."""
    c = cl.Cluster(tmp_path)
    c.state = cl.ClusterState(name="t", data_dir=str(tmp_path), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1", agent_args=["--kube-proxy-arg=proxy-mode=iptables"],
                              node_agent_args={"node-1": ["--kube-proxy-arg=proxy-mode=nftables"]},
                              flannel_backend="host-gw")
    node = c._new_node("node-1")
    node.agent_args = [*c.state.node_agent_args["node-1"], "--node-label=x=y"]
    c.state.nodes["node-1"] = node
    c.save()
    spawned = []
    monkeypatch.setattr(c, "_spawn", lambda argv, name: spawned.append(argv) or 0)
    c.start_node("node-1", wait=False)
    argv = spawned[0]
    i = argv.index("--flannel-backend")
    assert argv[i + 1] == "host-gw"
    assert argv[i + 2:] == ["--kube-proxy-arg=proxy-mode=iptables", "--kube-proxy-arg=proxy-mode=nftables",
                            "--node-label=x=y"]


def test_node_agent_arg_needs_node_equals_flag(tmp_path, capsys):
    code = kubeling_main(["cluster", "up", "--data-dir", str(tmp_path), "--node-agent-arg=--no-node-here"])
    assert code == 1
    assert "--node-agent-arg '--no-node-here': expected NODE=FLAG" in capsys.readouterr().err
    assert not (tmp_path / "cluster.json").exists()
