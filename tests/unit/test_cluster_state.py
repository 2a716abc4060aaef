"""kubeling cluster without processes: subnet choice, interface names, the state file, PID
safety, and ``images import --data-dir`` into every node of a cluster directory."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict

import pytest

from kubeling.cli.main import main as kubeling_main
from kubeling.cluster import cluster as cl
from kubeling.cluster import netns

N = ipaddress.ip_network


@pytest.mark.parametrize("used, avoid, want", [
    pytest.param([], [], "10.44.0.0/24", id="empty"),
    pytest.param([N("10.44.0.0/24")], [], "10.44.1.0/24", id="first-taken"),
    pytest.param([N("10.44.0.5/32"), N("10.44.1.0/25")], [], "10.44.2.0/24", id="host-and-half-routes"),
    pytest.param([N("10.0.0.0/8")], [], None, id="all-covered"),
    pytest.param([N("0.0.0.0/0")], [], "10.44.0.0/24", id="default-route-ignored"),
    pytest.param([], ["10.44.0.0/23"], "10.44.2.0/24", id="avoid-cidrs"),
])
def test_pick_subnet(used, avoid, want):
    if want is None:
        with pytest.raises(netns.NetworkError, match="--subnet"):
            netns.pick_subnet(used, avoid)
    else:
        assert str(netns.pick_subnet(used, avoid)) == want


@pytest.mark.parametrize("cluster, node", [
    pytest.param("kubeling", "node-1", id="short"),
    pytest.param("a-very-long-name-xx", "a-node-with-a-very-long-name.example.com", id="long"),
])
def test_interface_names_fit_ifnamsiz_and_differ(cluster, node):
    names = {netns.bridge_name(cluster), netns.veth_name(cluster, node), netns.veth_name(cluster, node + "x"),
             netns.veth_name(cluster + "x", node)}
    assert len(names) == 4
    assert all(len(n) <= 15 for n in names)
    assert netns.veth_name(cluster, node) == netns.veth_name(cluster, node)   # stable


def test_state_round_trips(tmp_path):
    c = cl.Cluster(tmp_path)
    c.state = cl.ClusterState(name="t", data_dir=str(tmp_path), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1", server_args=["--x=1"])
    c.state.nodes["node-1"] = c._new_node("node-1")
    c.state.nodes["node-2"] = c._new_node("node-2")
    c.save()
    again = cl.Cluster(tmp_path).load()
    assert asdict(again) == asdict(c.state)
    assert [n.ip for n in again.nodes.values()] == ["10.44.3.2", "10.44.3.3"]
    assert again.nodes["node-2"].netns == "t-node-2"
    assert again.nodes["node-2"].cgroup_root == "kubeling-t-node-2"
    assert again.server_url == "https://10.44.3.1:6443"
    assert json.loads((tmp_path / "cluster.json").read_text())["nodes"]["node-1"]["pid"] == 0


def test_no_state_is_a_clear_error(tmp_path):
    with pytest.raises(cl.ClusterError, match="kubeling cluster up"):
        cl.Cluster(tmp_path).load()
    assert kubeling_main(["cluster", "status", "--data-dir", str(tmp_path)]) == 1
    assert kubeling_main(["cluster", "down", "--data-dir", str(tmp_path)]) == 0      # nothing to remove


def test_a_recycled_pid_is_never_signalled(tmp_path):
    """`alive` is true only while the PID's argv still names what we started."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--data-dir", str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while not cl.alive(proc.pid, f"--data-dir {tmp_path}"):      # until the child has exec'd
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not cl.alive(proc.pid, "--data-dir /somewhere/else")
        cl.stop_process(proc.pid, "--data-dir /somewhere/else", timeout=1)
        assert proc.poll() is None                                  # not ours by that marker: untouched
        cl.stop_process(proc.pid, f"--data-dir {tmp_path}", timeout=5)
        assert proc.wait(5) == -15
        assert not cl.alive(proc.pid, f"--data-dir {tmp_path}")      # a zombie or gone: not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _docker_archive(path, tag: str) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("hello")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in (("manifest.json", manifest), ("config.json", config), ("layer.tar", layer_bytes)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_images_import_fills_every_node_of_a_cluster(tmp_path, capsys):
    c = cl.Cluster(tmp_path / "c")
    c.state = cl.ClusterState(name="t", data_dir=str(c.dir), subnet="10.44.3.0/24", bridge="kl-t",
                              server_ip="10.44.3.1")
    for name in ("node-1", "node-2", "node-3"):
        c.state.nodes[name] = c._new_node(name)
    c.save()
    archive = tmp_path / "tiny.tar"
    _docker_archive(archive, "example.com/tiny:1")
    assert kubeling_main(["images", "import", "--data-dir", str(c.dir), str(archive)]) == 0
    out = capsys.readouterr().out
    assert [line.rsplit(" ", 1)[1] for line in out.splitlines()] == ["node-1", "node-2", "node-3"]
    for name in ("node-1", "node-2", "node-3"):
        assert kubeling_main(["images", "ls", "--data-dir", str(c.dir / "nodes" / name)]) == 0
        assert "example.com/tiny" in capsys.readouterr().out
    assert kubeling_main(["images", "ls", "--data-dir", str(c.dir)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("example.com/tiny") == 3 and "node node-2:" in listing
