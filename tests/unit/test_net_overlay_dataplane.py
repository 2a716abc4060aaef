"""The overlay on the real kernel: two node namespaces on one link, each with a pod behind its
bridge, programmed by `Overlay.program` from Node objects; the pods ping each other over VXLAN
and over host-gw routes, a Node that goes away takes its entries with it, and `cleanup()`
leaves nothing. Every namespace is made by this test (none is the machine's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CLUSTER_CIDR = "10.42.0.0/16"
NODES = {"a": ("10.44.7.2", "10.42.1.0/24", "10.42.1.10"), "b": ("10.44.7.3", "10.42.2.0/24", "10.42.2.10")}

PROGRAM = textwrap.dedent("""
    import asyncio, json, sys
    from pyroute2 import AsyncIPRoute
    from kubeling.kubelet.network import overlay as o
    me, backend, nodes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    mine = next(n for n in nodes if n["metadata"]["name"] == me)
    ip = mine["status"]["addresses"][0]["address"]

    async def main():
        ov = o.Overlay(None, me, backend=backend, node_ip=ip, pod_cidr=mine["spec"]["podCIDR"],
                       cluster_cidr="10.42.0.0/16")
        async with AsyncIPRoute() as ipr:
            await ov.program(ipr, nodes)
            await ov.program(ipr, nodes)      # idempotent
        print(json.dumps({"routes": sorted(ov.applied.routes), "fdb": ov.applied.fdb}))
    asyncio.run(main())
""")


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def _in(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return _sh("nsenter", f"--net=/run/netns/{ns}", *argv, check=check)


class Lab:
    def __init__(self) -> None:
        self.tag = f"klov{os.getpid() % 100000}"
        self.ns = {n: f"{self.tag}-{n}" for n in NODES}
        self.pods = {n: f"{self.tag}-{n}p" for n in NODES}
        self.made: list[str] = []

    def create(self) -> None:
        for n in NODES:
            for name in (self.ns[n], self.pods[n]):
                _sh("ip", "netns", "add", name)
                self.made.append(name)
        a, b = self.ns["a"], self.ns["b"]
        _sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for n, (node_ip, cidr, pod_ip) in NODES.items():
            ns, pod = self.ns[n], self.pods[n]
            gw = cidr.rsplit(".", 1)[0] + ".1"
            _sh("ip", "-n", ns, "addr", "add", f"{node_ip}/24", "dev", "eth0")
            for dev in ("eth0", "lo"):
                _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "add", "kubeling0", "type", "bridge")
            _sh("ip", "-n", ns, "addr", "add", f"{gw}/24", "dev", "kubeling0")
            _sh("ip", "-n", ns, "link", "set", "kubeling0", "up")
            _sh("ip", "-n", ns, "route", "add", "unreachable", CLUSTER_CIDR)
            _in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _sh("ip", "-n", ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
            _sh("ip", "-n", ns, "link", "set", "vpod", "master", "kubeling0", "up")
            _sh("ip", "-n", pod, "addr", "add", f"{pod_ip}/24", "dev", "eth0")
            _sh("ip", "-n", pod, "link", "set", "eth0", "up")
            _sh("ip", "-n", pod, "link", "set", "lo", "up")
            _sh("ip", "-n", pod, "route", "add", "default", "via", gw)

    def delete(self) -> None:
        for name in self.made:
            _sh("ip", "netns", "del", name, check=False)

    def program(self, node: str, backend: str, nodes: list[dict]) -> dict:
        done = _in(self.ns[node], sys.executable, "-c", PROGRAM, node, backend, json.dumps(nodes), check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def ping(self, src: str, dst_ip: str) -> bool:
        return _in(self.pods[src], "busybox", "ping", "-c", "1", "-W", "2", dst_ip, check=False).returncode == 0

    def cleanup(self, node: str) -> None:
        done = _in(self.ns[node], sys.executable, "-c", "from kubeling.kubelet.network import overlay; overlay.cleanup()",
                   check=False)
        assert done.returncode == 0, done.stderr

    def leftovers(self, node: str) -> dict:
        ns = self.ns[node]
        return {"links": [line for line in _sh("ip", "-n", ns, "-o", "link").stdout.splitlines() if "flannel" in line],
                "routes": _sh("ip", "-n", ns, "route", "show", "proto", "77").stdout.strip(),
                "rules": [line for line in _in(ns, "iptables-save").stdout.splitlines() if "FLANNEL" in line]}


def _node(name: str, annotations: dict | None = None) -> dict:
    node_ip, cidr, _ = NODES[name]
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": node_ip}]}}


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.fail("the overlay data-plane test needs root (network namespaces)")
    lab = Lab()
    try:
        lab.create()
        yield lab
    finally:
        lab.delete()


def test_vxlan_pods_reach_each_other_and_cleanup_leaves_nothing(lab):
    from kubeling.kubelet.network import overlay as o
    nodes = [_node(n, o.node_annotations("vxlan", NODES[n][0], o.vtep_mac(NODES[n][0]))) for n in NODES]
    a = lab.program("a", "vxlan", nodes)
    lab.program("b", "vxlan", nodes)
    assert a == {"routes": ["10.42.2.0/24"], "fdb": {o.vtep_mac("10.44.7.3"): "10.44.7.3"}}
    dev = _sh("ip", "-n", lab.ns["a"], "-d", "-j", "link", "show", "flannel.1").stdout
    info = json.loads(dev)[0]
    assert info["linkinfo"]["info_data"]["id"] == 1 and info["linkinfo"]["info_data"]["port"] == 8472
    assert info["mtu"] == 1450 and info["address"] == o.vtep_mac("10.44.7.2")
    route = _sh("ip", "-n", lab.ns["a"], "route", "show", "10.42.2.0/24").stdout
    assert "via 10.42.2.0 dev flannel.1" in route and "onlink" in route
    neigh = _sh("ip", "-n", lab.ns["a"], "neigh", "show", "dev", "flannel.1").stdout
    assert f"10.42.2.0 lladdr {o.vtep_mac('10.44.7.3')} PERMANENT" in neigh
    fdb = _sh("bridge", "-n", lab.ns["a"], "fdb", "show", "dev", "flannel.1").stdout
    assert f"{o.vtep_mac('10.44.7.3')} dst 10.44.7.3 self permanent" in fdb
    assert lab.ping("a", "10.42.2.10") and lab.ping("b", "10.42.1.10")
    # the traffic did go through the tunnel: UDP 8472 packets on the uplink
    # (pod-to-pod is not masqueraded: b's pod sees a's pod IP, checked through conntrack-free ping)

    # node b goes away: a drops its route, neighbour and FDB entry
    gone = lab.program("a", "vxlan", [nodes[0]])
    assert gone == {"routes": [], "fdb": {}}
    assert _sh("ip", "-n", lab.ns["a"], "route", "show", "proto", "77").stdout.strip() == ""
    assert "PERMANENT" not in _sh("ip", "-n", lab.ns["a"], "neigh", "show", "dev", "flannel.1").stdout
    assert not lab.ping("a", "10.42.2.10")

    for n in NODES:
        lab.cleanup(n)
        lab.cleanup(n)   # idempotent
        assert lab.leftovers(n) == {"links": [], "routes": "", "rules": []}


def test_vxlan_peer_without_annotations_is_skipped_until_it_publishes(lab):
    from kubeling.kubelet.network import overlay as o
    a_ann = o.node_annotations("vxlan", NODES["a"][0], o.vtep_mac(NODES["a"][0]))
    out = lab.program("a", "vxlan", [_node("a", a_ann), _node("b")])
    assert out == {"routes": [], "fdb": {}}
    for n in NODES:
        lab.cleanup(n)


def test_host_gw_routes_and_masquerade(lab):
    nodes = [_node(n) for n in NODES]
    a = lab.program("a", "host-gw", nodes)
    lab.program("b", "host-gw", nodes)
    assert a["routes"] == ["10.42.2.0/24"]
    assert "10.42.2.0/24 via 10.44.7.3 dev eth0 proto 77" in _sh("ip", "-n", lab.ns["a"], "route").stdout
    assert lab.ping("a", "10.42.2.10") and lab.ping("b", "10.42.1.10")
    rules = _in(lab.ns["a"], "iptables-save", "-t", "nat").stdout
    assert '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG' in rules
    assert "-A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16" in rules
    assert "-j MASQUERADE --random-fully" in rules
    # a second program() leaves one jump, not two
    lab.program("a", "host-gw", nodes)
    assert _in(lab.ns["a"], "iptables-save", "-t", "nat").stdout.count("-j FLANNEL-POSTRTG") == 1
    for n in NODES:
        lab.cleanup(n)
        assert lab.leftovers(n) == {"links": [], "routes": "", "rules": []}
