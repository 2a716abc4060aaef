"""kubeling.cluster.netns on the real kernel: a bridge and two node namespaces, made inside a
namespace this test creates (never the machine's own), reach each other; isolation cuts one
off; deleting leaves nothing."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap

from kubeling.cluster import netns

OUTER = f"klut-{os.getpid()}"
CLUSTER = f"ut{os.getpid() % 100000}"
SCRIPT = textwrap.dedent("""
    import ipaddress, json, sys
    from kubeling.cluster import netns as n
    cluster, step = sys.argv[1], sys.argv[2]
    bridge = n.bridge_name(cluster)
    nodes = {name: (n.netns_name(cluster, name), n.veth_name(cluster, name), f"10.44.0.{i + 2}/24")
             for i, name in enumerate(("node-1", "node-2"))}
    if step == "create":
        subnet = n.pick_subnet(n.used_networks(), avoid=("10.42.0.0/16", "10.43.0.0/16"))
        n.create_bridge(bridge, ipaddress.ip_interface("10.44.0.1/24"))
        for ns, veth, addr in nodes.values():
            n.create_node_netns(ns, veth, bridge, ipaddress.ip_interface(addr), ("10.42.0.0/16", "10.43.0.0/16"))
            n.create_node_netns(ns, veth, bridge, ipaddress.ip_interface(addr), ("10.42.0.0/16",))  # idempotent
        print(json.dumps({"picked": str(subnet), "after": str(n.pick_subnet(n.used_networks()))}))
    elif step in ("cut", "mend"):
        n.set_link(nodes["node-2"][1], up=step == "mend")
        print(json.dumps({"up": n.link_is_up(nodes["node-2"][1])}))
    else:
        for ns, veth, _ in nodes.values():
            n.delete_link(veth)
            n.delete_netns(ns)
            n.delete_netns(ns)   # idempotent
        n.delete_link(bridge)
        print(json.dumps({"left": [l["ifname"] for l in json.loads(n.ip("-j", "link").stdout)]}))
""")


def _in(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *argv], capture_output=True, text=True, check=check)


def _step(step: str) -> dict:
    import json
    return json.loads(_in(OUTER, sys.executable, "-c", SCRIPT, CLUSTER, step).stdout)


def _ping(src_ns: str, dst: str) -> bool:
    return _in(src_ns, "busybox", "ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0


def test_bridge_and_node_namespaces():
    subprocess.run(["ip", "netns", "add", OUTER], check=True)
    n1, n2 = netns.netns_name(CLUSTER, "node-1"), netns.netns_name(CLUSTER, "node-2")
    try:
        _in(OUTER, "ip", "link", "set", "lo", "up")
        got = _step("create")
        # the first free /24 was picked before the bridge existed; with the bridge up it is taken
        assert got == {"picked": "10.44.0.0/24", "after": "10.44.1.0/24"}
        assert _ping(n1, "10.44.0.3") and _ping(n1, "10.44.0.1")
        routes = _in(n1, "ip", "route").stdout
        assert "default" not in routes                              # nothing leaves the machine
        assert "unreachable 10.42.0.0/16" in routes and "unreachable 10.43.0.0/16" in routes
        assert _in(n1, "ip", "route", "get", "10.42.7.7", check=False).returncode != 0

        assert _step("cut") == {"up": False}
        assert not _ping(n1, "10.44.0.3")
        assert _step("mend") == {"up": True}
        assert _ping(n1, "10.44.0.3")

        assert _step("delete") == {"left": ["lo"]}
        assert not netns.netns_exists(n1) and not netns.netns_exists(n2)
    finally:
        for ns in (n1, n2, OUTER):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def test_used_networks_sees_routes_and_addresses():
    subprocess.run(["ip", "netns", "add", OUTER], check=True)
    try:
        _in(OUTER, "ip", "link", "set", "lo", "up")
        _in(OUTER, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        _in(OUTER, "ip", "addr", "add", "10.44.0.9/32", "dev", "d0")
        _in(OUTER, "ip", "link", "set", "d0", "up")
        _in(OUTER, "ip", "route", "add", "10.44.1.0/24", "dev", "d0")
        out = _in(OUTER, sys.executable, "-c", "from kubeling.cluster import netns as n; "
                  "print(n.pick_subnet(n.used_networks()))").stdout.strip()
        assert ipaddress.ip_network(out) == ipaddress.ip_network("10.44.2.0/24")
    finally:
        subprocess.run(["ip", "netns", "delete", OUTER], capture_output=True, check=False)
