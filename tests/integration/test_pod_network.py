"""BridgeNetwork for real: netns, veth, bridge, routes and iptables, as root.

The plugin never runs in this test's own network namespace. Each test makes a netns of its own
that plays the node (``<prefix>h``): the plugin runs there in a child process started with
``ip netns exec`` — exactly as an agent runs when the e2e harness puts a cluster in a netns — and
a fresh child (a fresh plugin object) serves each step, so every step also shows that the state
survives an agent restart. Pod netns are ``<prefix>p1``, ``<prefix>p2``. Every netns is deleted
in ``finally``; deleting the node netns takes its bridge, routes and iptables rules with it.
Traffic stays inside these namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

PREFIX = f"kltest{os.getpid()}"
BRIDGE = "kltestbr0"
POD_CIDR = "10.42.7.0/24"
GATEWAY = "10.42.7.1"
NODE_IP = "198.51.100.7"  # TEST-NET-2, on a link inside the node netns only

# Runs inside the node netns: reads {"root", "pod_cidr", "ops": [...]}, prints one result per op.
DRIVER = textwrap.dedent('''
    import asyncio, json, sys, time
    from kubeling.kubelet.network import BridgeNetwork, count_leaks
    from kubeling.kubelet.runtime import PortMapping, SandboxConfig

    async def main(req):
        net = BridgeNetwork(req["root"], req["pod_cidr"], bridge=req["bridge"])
        out = []
        for op in req["ops"]:
            cfg = SandboxConfig(uid="u", name="p", namespace="default",
                                port_mappings=[PortMapping(*pm) for pm in op.get("ports", [])])
            try:
                if op["op"] == "ensure":
                    out.append(await net.ensure_node())
                elif op["op"] == "setup":
                    out.append(await net.setup(op["id"], op["netns"], cfg))
                elif op["op"] == "teardown":
                    out.append(await net.teardown(op["id"], op["netns"], cfg))
                elif op["op"] == "setup_many":  # concurrently, as a kubelet starting many pods
                    t0 = time.monotonic()
                    ips = await asyncio.gather(*(net.setup(i, ns, cfg) for i, ns in op["pods"]))
                    out.append({"ips": ips, "seconds": time.monotonic() - t0})
                elif op["op"] == "cancel":  # cancel setups at several points; report what leaked
                    cancelled, leaked = 0, []
                    for k in range(op["n"]):
                        task = asyncio.create_task(net.setup(op["id"], op["netns"], cfg))
                        await asyncio.sleep(k * 0.002)
                        task.cancel()
                        try:
                            await task
                        except asyncio.CancelledError:
                            cancelled += 1
                            leaked.append(await count_leaks(req["root"], bridge=req["bridge"]))
                        else:  # it finished first: a normal teardown
                            await net.teardown(op["id"], op["netns"], cfg)
                    out.append({"cancelled": cancelled, "leaked": leaked})
                elif op["op"] == "cycles":
                    for i in range(op["n"]):
                        sid = "%08x" % i + "c" * 56
                        ports = [PortMapping(8080, 31000 + i)] if i % 5 == 0 else []
                        cfg.port_mappings = ports
                        await net.setup(sid, op["netns"], cfg)
                        await net.teardown(sid, op["netns"], cfg)
                    out.append(op["n"])
                elif op["op"] == "delete_bridge":  # as an admin's "ip link del" under a live node
                    import subprocess
                    subprocess.run(["ip", "link", "del", req["bridge"]], check=True)
                    out.append(None)
                elif op["op"] == "leaks":
                    out.append(await count_leaks(req["root"], op.get("live", []), bridge=req["bridge"]))
            except Exception as e:
                out.append({"error": type(e).__name__, "message": str(e)})
        return out

    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
''')


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def sid(n: int) -> str:
    return f"{n:08x}" + "ab" * 28


class Node:
    """A node netns with the plugin's state dir; `run` drives a fresh plugin inside it."""

    def __init__(self, root: Path) -> None:
        self.ns = PREFIX + "h"
        self.root = root

    def run(self, *ops: dict) -> list:
        req = {"root": str(self.root), "pod_cidr": POD_CIDR, "bridge": BRIDGE, "ops": list(ops)}
        res = in_ns(self.ns, sys.executable, "-c", DRIVER, json.dumps(req))
        return json.loads(res.stdout)

    def setup(self, n: int, pod: str, ports=()) -> str:
        [ip] = self.run({"op": "setup", "id": sid(n), "netns": netns_path(pod), "ports": list(ports)})
        assert isinstance(ip, str), ip
        return ip

    def teardown(self, n: int, pod: str) -> None:
        assert self.run({"op": "teardown", "id": sid(n), "netns": netns_path(pod)}) == [None]

    def leaks(self, live=()) -> dict:
        return self.run({"op": "leaks", "live": [sid(n) for n in live]})[0]


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


@contextlib.contextmanager
def cluster(*pods: str):
    """The node netns (with a link holding NODE_IP) and the named pod netns, removed after."""
    made = []
    tmp = tempfile.mkdtemp(prefix=PREFIX)
    try:
        for name in (PREFIX + "h", *(PREFIX + p for p in pods)):
            sh("ip", "netns", "add", name)
            made.append(name)
        node = Node(Path(tmp))
        in_ns(node.ns, "ip", "link", "set", "lo", "up")
        # The node's "NIC": a veth pair (the kernel here has no dummy driver), its far end unused.
        in_ns(node.ns, "ip", "link", "add", "kltestnic", "type", "veth", "peer", "name", "kltestwire")
        in_ns(node.ns, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "kltestnic")
        in_ns(node.ns, "ip", "link", "set", "kltestwire", "up")
        in_ns(node.ns, "ip", "link", "set", "kltestnic", "up")
        yield node
    finally:
        for name in made:
            sh("ip", "netns", "del", name, check=False)
        subprocess.run(["rm", "-rf", tmp], check=False)


def ping(ns: str, ip: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0


ECHO_SERVER = textwrap.dedent('''
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
    print("ready", flush=True)
    for _ in range(int(sys.argv[2])):
        c, peer = s.accept()
        c.sendall(("%s %s" % (c.recv(100).decode(), peer[0])).encode()); c.close()
''')

ECHO_CLIENT = textwrap.dedent('''
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    c.sendall(b"hello"); print(c.recv(200).decode())
''')


@contextlib.contextmanager
def echo_server(ns: str, port: int, accepts: int):
    """A TCP server in ``ns`` answering "<what you sent> <your address as seen>", ``accepts`` times."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_SERVER, str(port), str(accepts)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def tcp(ns: str, ip: str, port: int) -> str:
    return in_ns(ns, sys.executable, "-c", ECHO_CLIENT, ip, str(port)).stdout.strip()


def test_two_pods_on_one_bridge_reach_each_other():
    with cluster("p1", "p2") as node:
        assert node.run({"op": "ensure"}) == [None]
        ip1 = node.setup(1, PREFIX + "p1")
        ip2 = node.setup(2, PREFIX + "p2")  # a fresh plugin object: the first IP is still taken
        net = ipaddress.ip_network(POD_CIDR)
        assert ip1 != ip2 and {ipaddress.ip_address(ip1), ipaddress.ip_address(ip2)} <= set(net.hosts())
        assert GATEWAY not in (ip1, ip2)

        # Pod side: eth0 holds the IP, lo is up, the default route goes to the gateway.
        addrs = json.loads(in_ns(PREFIX + "p1", "ip", "-j", "addr", "show", "eth0").stdout)
        assert [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"] if a["family"] == "inet"] == [(ip1, 24)]
        assert "UP" in json.loads(in_ns(PREFIX + "p1", "ip", "-j", "link", "show", "lo").stdout)[0]["flags"]
        routes = json.loads(in_ns(PREFIX + "p1", "ip", "-j", "route", "show", "default").stdout)
        assert [(r["gateway"], r["dev"]) for r in routes] == [(GATEWAY, "eth0")]

        # Node side: the veth is a hairpin port of the bridge; the CIDRs outside are unreachable.
        link = json.loads(in_ns(node.ns, "ip", "-d", "-j", "link", "show", "veth" + sid(1)[:8]).stdout)[0]
        assert link["master"] == BRIDGE and link["linkinfo"]["info_slave_data"]["hairpin"] is True
        unreachable = json.loads(in_ns(node.ns, "ip", "-j", "route", "show", "type", "unreachable").stdout)
        assert {r["dst"] for r in unreachable} == {"10.42.0.0/16", "10.43.0.0/16"}
        assert in_ns(node.ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        # A pod of another node's range, and a Service VIP with no rule, fail at once.
        for ip in ("10.42.9.9", "10.43.0.10"):
            refused = in_ns(PREFIX + "p1", sys.executable, "-c", ECHO_CLIENT, ip, "80", check=False)
            assert "No route to host" in refused.stderr  # the node's ICMP unreachable, not a timeout

        assert ping(PREFIX + "p1", ip2) and ping(PREFIX + "p2", ip1) and ping(node.ns, ip1)
        with echo_server(PREFIX + "p2", 7000, 1):
            assert tcp(PREFIX + "p1", ip2, 7000) == f"hello {ip1}"  # no NAT between pods

        node.teardown(1, PREFIX + "p1")
        node.teardown(2, PREFIX + "p2")
        node.teardown(2, PREFIX + "p2")  # idempotent
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}
        assert not ping(node.ns, ip1)


def test_host_port_dnat_from_node_other_pods_and_itself():
    with cluster("p1", "p2") as node:
        ip1 = node.setup(1, PREFIX + "p1", ports=[(8080, 30080, "TCP")])
        ip2 = node.setup(2, PREFIX + "p2")
        rules = in_ns(node.ns, "iptables", "-w", "-t", "nat", "-S", "KUBELING-HOSTPORTS").stdout
        assert f"--comment {sid(1)}" in rules and f"--to-destination {ip1}:8080" in rules
        assert node.leaks(live=[1, 2]) == {"veths": 0, "ips": 0, "hostport_rules": 0}
        assert node.leaks(live=[2]) == {"veths": 1, "ips": 1, "hostport_rules": 2}

        with echo_server(PREFIX + "p1", 8080, 3):
            assert tcp(node.ns, NODE_IP, 30080) == f"hello {NODE_IP}"   # OUTPUT: from the node itself
            assert tcp(PREFIX + "p2", NODE_IP, 30080) == f"hello {GATEWAY}"  # masqueraded from a pod
            assert tcp(PREFIX + "p1", NODE_IP, 30080) == f"hello {GATEWAY}"  # hairpin to itself
        assert in_ns(node.ns, sys.executable, "-c", ECHO_CLIENT, NODE_IP, "30081", check=False).returncode != 0

        node.teardown(1, PREFIX + "p1")
        rules = in_ns(node.ns, "iptables", "-w", "-t", "nat", "-S").stdout
        assert sid(1) not in rules and "-j KUBELING-HOSTPORTS" in rules  # the chains and jumps stay
        assert node.leaks(live=[2]) == {"veths": 0, "ips": 0, "hostport_rules": 0}
        node.teardown(2, PREFIX + "p2")
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}
        assert ip2


def test_teardown_after_the_netns_is_gone():
    with cluster("p1") as node:
        node.setup(1, PREFIX + "p1", ports=[(80, 30090, "TCP")])
        sh("ip", "netns", "del", PREFIX + "p1")
        node.teardown(1, PREFIX + "p1")
        node.teardown(1, PREFIX + "p1")
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}


@pytest.mark.parametrize("ops, message", [
    pytest.param([{"op": "setup", "id": sid(1), "netns": netns_path(PREFIX + "missing"), "ports": []}],
                 "No such file or directory", id="netns-missing"),
    pytest.param([{"op": "setup", "id": sid(1), "netns": netns_path(PREFIX + "p1"), "ports": [[80, 30100, "TCP"]]},
                  {"op": "setup", "id": sid(2), "netns": netns_path(PREFIX + "p1"), "ports": [[80, 30101, "TCP"]]}],
                 "failed (add): netlink: File exists", id="pod-already-has-eth0"),
])
def test_failed_setup_leaves_nothing(ops, message):
    with cluster("p1") as node:
        out = node.run(*ops)
        assert out[-1]["error"] == "SandboxError"
        assert out[-1]["message"].startswith(f'failed to setup network for sandbox "{ops[-1]["id"]}": '
                                             'plugin type="bridge" name="kubeling" failed (add): ')
        assert message in out[-1]["message"]
        live = [1] if len(ops) > 1 else []
        assert node.leaks(live=live) == {"veths": 0, "ips": 0, "hostport_rules": 0}


def test_retried_setup_returns_the_same_ip():
    with cluster("p1") as node:
        ip = node.setup(1, PREFIX + "p1")
        assert node.setup(1, PREFIX + "p1") == ip
        assert ping(node.ns, ip)
        node.teardown(1, PREFIX + "p1")
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}


def test_fifty_cycles_leak_nothing():
    with cluster("p1") as node:
        assert node.run({"op": "cycles", "n": 50, "netns": netns_path(PREFIX + "p1")},
                        {"op": "leaks"}) == [50, {"veths": 0, "ips": 0, "hostport_rules": 0}]
        links = json.loads(in_ns(PREFIX + "p1", "ip", "-j", "link").stdout)
        assert [link["ifname"] for link in links] == ["lo"]
        veths = json.loads(in_ns(node.ns, "ip", "-j", "link", "show", "type", "veth").stdout)
        assert [v["ifname"] for v in veths if v["ifname"].startswith("veth")] == []


def test_concurrent_setups_on_a_fresh_node():
    """Twelve sandboxes at once on a node whose bridge does not exist yet: each gets its own IP and
    reaches the others (the bridge is made once, the IPAM lock holds)."""
    pods = [f"q{i}" for i in range(12)]
    with cluster(*pods) as node:
        [res] = node.run({"op": "setup_many", "pods": [[sid(i), netns_path(PREFIX + p)] for i, p in enumerate(pods)]})
        assert len(set(res["ips"])) == 12, res
        assert res["seconds"] < 10, res
        assert ping(PREFIX + "q0", res["ips"][11]) and ping(PREFIX + "q11", res["ips"][0])
        for i, p in enumerate(pods):
            node.teardown(i, PREFIX + p)
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}


def test_a_cancelled_setup_leaves_nothing():
    """The kubelet may cancel a sandbox start (the pod was deleted): whatever step the setup had
    reached, nothing stays behind."""
    with cluster("p1") as node:
        [res] = node.run({"op": "cancel", "n": 15, "id": sid(1), "netns": netns_path(PREFIX + "p1"),
                          "ports": [[80, 30200, "TCP"]]})
        assert res["cancelled"] >= 3, res
        assert all(leak == {"veths": 0, "ips": 0, "hostport_rules": 0} for leak in res["leaked"]), res
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}


def test_bridge_deleted_under_a_running_plugin_is_made_again():
    """The plugin remembers its bridge after the first setup; a bridge deleted since is found out at
    the next setup, which makes it again (with the gateway) and plugs the new pod into it."""
    with cluster("p1", "p2") as node:
        out = node.run({"op": "setup", "id": sid(1), "netns": netns_path(PREFIX + "p1"), "ports": []},
                       {"op": "delete_bridge"},
                       {"op": "setup", "id": sid(2), "netns": netns_path(PREFIX + "p2"), "ports": []})
        assert isinstance(out[2], str), out
        bridge = json.loads(in_ns(node.ns, "ip", "-j", "addr", "show", "dev", BRIDGE).stdout)[0]
        assert GATEWAY in [a["local"] for a in bridge["addr_info"]]
        ports = json.loads(in_ns(node.ns, "ip", "-j", "link", "show", "master", BRIDGE).stdout)
        assert [p["ifname"] for p in ports] == ["veth" + sid(2)[:8]]
        assert ping(PREFIX + "p2", GATEWAY)
        node.teardown(1, PREFIX + "p1")
        node.teardown(2, PREFIX + "p2")
        assert node.leaks() == {"veths": 0, "ips": 0, "hostport_rules": 0}
