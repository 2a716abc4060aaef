"""kubeling cluster's etcd layout without processes: the state of control planes, their addresses,
the etcd members' and servers' command lines, the token kept across ups, and refused options."""

from __future__ import annotations

import stat
from dataclasses import asdict

import pytest

from kubeling.cli.main import main as kubeling_main
from kubeling.cluster import cluster as cl


def _layout(tmp_path, control_planes: int = 3, nodes: int = 2) -> cl.Cluster:
    c = cl.Cluster(tmp_path)
    c.state = cl.ClusterState(name="t", data_dir=str(tmp_path), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1", secure_port=6443, datastore="etcd", token=c._cluster_token())
    for i in range(1, control_planes + 1):
        cp = c._new_control_plane(i, f"10.44.3.{i + 1}")
        c.state.control_planes[cp.name] = cp
    c.state.server_ip = c.state.control_planes["server-1"].ip
    for i in range(1, nodes + 1):
        c.state.nodes[f"node-{i}"] = c._new_node(f"node-{i}")
    c.save()
    return c


def test_state_round_trips_with_control_planes(tmp_path):
    c = _layout(tmp_path)
    again = cl.Cluster(tmp_path).load()
    assert asdict(again) == asdict(c.state)
    assert again.ha and again.datastore == "etcd"
    cps = list(again.control_planes.values())
    assert [cp.name for cp in cps] == ["server-1", "server-2", "server-3"]
    assert [cp.etcd_name for cp in cps] == ["etcd-1", "etcd-2", "etcd-3"]
    assert [cp.netns for cp in cps] == ["t-server-1", "t-server-2", "t-server-3"]
    assert cps[1].data_dir == str(tmp_path / "server-2") and cps[1].etcd_dir == str(tmp_path / "etcd" / "etcd-2")
    assert len({cp.veth for cp in cps} | {n.veth for n in again.nodes.values()}) == 5
    # the bridge keeps .1; control planes .2-.4; nodes after them
    assert [n.ip for n in again.nodes.values()] == ["10.44.3.5", "10.44.3.6"]
    assert again.etcd_endpoints() == "https://10.44.3.2:2379,https://10.44.3.3:2379,https://10.44.3.4:2379"
    # the admin kubeconfig and node token are server-1's
    assert cl.Cluster(tmp_path).kubeconfig == tmp_path / "server-1" / "admin.kubeconfig"
    assert str(cl.Cluster(tmp_path).token_file).startswith(str(tmp_path / "server-1"))


def test_member_and_server_command_lines(tmp_path):
    c = _layout(tmp_path)
    cp = c.control_plane("etcd-2")
    assert cp is c.control_plane("server-2")
    argv = c.etcd_argv(cp)
    flag = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    assert flag["--name"] == "etcd-2" and flag["--data-dir"] == cp.etcd_dir
    assert flag["--listen-client-urls"] == "https://10.44.3.3:2379,https://127.0.0.1:2379"
    assert flag["--listen-peer-urls"] == flag["--initial-advertise-peer-urls"] == "https://10.44.3.3:2380"
    assert flag["--initial-cluster"] == ("etcd-1=https://10.44.3.2:2380,etcd-2=https://10.44.3.3:2380,"
                                         "etcd-3=https://10.44.3.4:2380")
    pki = tmp_path / "etcd" / "pki"
    assert flag["--trusted-ca-file"] == flag["--peer-trusted-ca-file"] == str(pki / "ca.crt")
    assert flag["--cert-file"] == flag["--peer-cert-file"] == str(pki / "etcd-2.crt")
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    server = c.cp_server_argv(cp)
    flag = {server[i]: server[i + 1] for i in range(len(server) - 1) if server[i].startswith("--")}
    assert flag["--bind-address"] == flag["--advertise-address"] == "10.44.3.3"
    assert flag["--datastore-endpoint"] == c.state.etcd_endpoints()
    assert flag["--token"] == c.state.token and flag["--data-dir"] == cp.data_dir
    assert "--disable-agent" in server
    assert (flag["--datastore-cafile"], flag["--datastore-certfile"], flag["--datastore-keyfile"]) == (
        str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key"))
    # agents are given every server (none runs here: all, in order)
    assert c.agent_server() == "https://10.44.3.2:6443,https://10.44.3.3:6443,https://10.44.3.4:6443"


def test_the_etcd_pki(tmp_path):
    from cryptography import x509
    pki = tmp_path / "pki"
    cl.ensure_etcd_pki(pki, {"etcd-1": ["10.44.3.2"], "etcd-2": ["10.44.3.3"]})
    assert sorted(p.name for p in pki.iterdir()) == ["ca.crt", "ca.key", "client.crt", "client.key", "etcd-1.crt",
                                                     "etcd-1.key", "etcd-2.crt", "etcd-2.key"]
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in pki.glob("*.key"))
    member = x509.load_pem_x509_certificate((pki / "etcd-2.crt").read_bytes())
    ips = [str(i) for i in member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
           .get_values_for_type(x509.IPAddress)]
    assert ips == ["10.44.3.3", "127.0.0.1"]
    client = x509.load_pem_x509_certificate((pki / "client.crt").read_bytes())
    assert client.subject.rfc4514_string() == "CN=kube-apiserver-etcd-client"
    before = (pki / "etcd-1.crt").read_bytes()
    cl.ensure_etcd_pki(pki, {"etcd-1": ["10.44.3.2"], "etcd-2": ["10.44.3.3"]})      # kept
    assert (pki / "etcd-1.crt").read_bytes() == before


def test_the_token_is_private_and_kept(tmp_path):
    c = _layout(tmp_path)
    path = tmp_path / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == c.state.token and len(c.state.token) == 32
    assert cl.Cluster(tmp_path)._cluster_token() == c.state.token


def test_unknown_names_and_node_name_clashes(tmp_path):
    c = _layout(tmp_path)
    with pytest.raises(cl.ClusterError, match="no control plane etcd-9"):
        c.control_plane("etcd-9")
    with pytest.raises(cl.ClusterError, match="control plane's name"):
        c.add_node("server-2")


@pytest.mark.parametrize("args, message", [
    pytest.param(["--control-planes", "3"], "give --datastore etcd", id="several-on-sqlite"),
    pytest.param(["--control-planes", "0", "--datastore", "etcd"], "at least 1", id="none"),
])
def test_refused_before_anything_is_made(tmp_path, capsys, args, message):
    assert kubeling_main(["cluster", "up", "--nodes", "1", "--data-dir", str(tmp_path / "c"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_operating_commands_need_an_etcd_layout(tmp_path, capsys):
    c = cl.Cluster(tmp_path)
    c.state = cl.ClusterState(name="t", data_dir=str(tmp_path), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1")
    c.save()
    for what in ("server", "etcd"):
        assert kubeling_main(["cluster", what, "kill", f"{what}-1", "--data-dir", str(tmp_path)]) == 1
        assert "it has one server, no etcd" in capsys.readouterr().err
