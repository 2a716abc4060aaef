"""NetworkPolicy rules in a real kernel: a bridge, br_netfilter, conntrack, rejects, atomic swaps.

The test builds a small node of its own, all in network namespaces it makes and deletes:

    <prefix>n  (the node)   bridge kubeling0 10.42.9.1/24, forwarding on, our nft table
      ├── veth ── <prefix>s  server 10.42.9.2  (TCP 8080 and 9090)
      ├── veth ── <prefix>a  client 10.42.9.3  (app=client)
      ├── veth ── <prefix>b  client 10.42.9.4  (app=other)
      └── veth ── <prefix>x  "another node" 192.0.2.2, routed (as overlay traffic is)

Rules come from `compute_rules` + `render_nft` applied with ``nft -f`` inside the node netns;
`count_leaks` and `cleanup` run there too. Nothing runs in the test's own namespace, and no
namespace has a route out of this set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from kubeling.kubelet.network.policy_rules import compute_rules, render_nft

PREFIX = f"klnp{os.getpid() % 100000}"
NODE, SERVER, CLIENT_A, CLIENT_B, REMOTE = (f"{PREFIX}{s}" for s in "nsabx")
IPS = {SERVER: "10.42.9.2", CLIENT_A: "10.42.9.3", CLIENT_B: "10.42.9.4"}
REMOTE_IP, REMOTE_GW = "192.0.2.2", "192.0.2.1"

SERVE = textwrap.dedent("""
    import socket, threading
    def serve(port):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(64)
        while True:
            c, _ = s.accept(); c.sendall(b"hi %d" % port); c.close()
    for p in (8080, 9090):
        threading.Thread(target=serve, args=(p,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")

# connect(ip, port) from inside a namespace: "hi <port>", "refused", "unreachable" or "timeout"
CONNECT = textwrap.dedent("""
    import socket, sys, errno
    ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1
    out = []
    for _ in range(n):
        s = socket.socket(); s.settimeout(2)
        try:
            s.connect((ip, port)); out.append(s.recv(16).decode())
        except socket.timeout:
            out.append("timeout")
        except OSError as e:
            out.append("refused" if e.errno == errno.ECONNREFUSED else "unreachable")
        finally:
            s.close()
    print(" ".join(out))
""")


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr}")
    return done


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, **kw)


def connect(src: str, ip: str, port: int, n: int = 1) -> str:
    return in_ns(src, sys.executable, "-c", CONNECT, ip, str(port), str(n)).stdout.strip()


@pytest.fixture(scope="module")
def node():
    made: list[str] = []
    server = None
    try:
        for ns in (NODE, SERVER, CLIENT_A, CLIENT_B, REMOTE):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(NODE, "ip", "link", "add", "kubeling0", "type", "bridge")
        in_ns(NODE, "ip", "addr", "add", "10.42.9.1/24", "dev", "kubeling0")
        in_ns(NODE, "ip", "link", "set", "kubeling0", "up")
        assert in_ns(NODE, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").stdout.strip() == "1"
        for i, (ns, ip) in enumerate(IPS.items()):
            in_ns(NODE, "ip", "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            in_ns(NODE, "ip", "link", "set", f"veth{i}", "master", "kubeling0", "up")
            in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "route", "add", "default", "via", "10.42.9.1")
        in_ns(NODE, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", REMOTE)
        in_ns(NODE, "ip", "addr", "add", f"{REMOTE_GW}/24", "dev", "uplink")
        in_ns(NODE, "ip", "link", "set", "uplink", "up")
        in_ns(REMOTE, "ip", "addr", "add", f"{REMOTE_IP}/24", "dev", "eth0")
        in_ns(REMOTE, "ip", "link", "set", "eth0", "up")
        in_ns(REMOTE, "ip", "route", "add", "10.42.9.0/24", "via", REMOTE_GW)
        server = subprocess.Popen(["ip", "netns", "exec", SERVER, sys.executable, "-c", SERVE],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def pod(name, ip, labels, ports=()):
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": list(ports)}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


PODS = [pod("server", IPS[SERVER], {"app": "server"}, [{"name": "web", "containerPort": 8080}]),
        pod("client-a", IPS[CLIENT_A], {"app": "client"}), pod("client-b", IPS[CLIENT_B], {"app": "other"})]
NAMESPACES = [{"metadata": {"name": "default"}}]


def apply(*specs: dict) -> None:
    policies = [{"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": s} for i, s in enumerate(specs)]
    rules = compute_rules("n", PODS, NAMESPACES, policies)
    assert not rules.problems
    in_ns(NODE, "nft", "-f", "-", input=render_nft(rules, node_name="n"))


def leaks() -> dict:
    code = "import json; from kubeling.kubelet.network.policy import count_leaks; print(json.dumps(count_leaks()))"
    return json.loads(in_ns(NODE, sys.executable, "-c", code).stdout)


def cleanup() -> None:
    in_ns(NODE, sys.executable, "-c", "from kubeling.kubelet.network.policy import cleanup; cleanup()")


SERVER_SEL = {"matchLabels": {"app": "server"}}


def test_open_without_policies(node):
    assert connect(CLIENT_A, IPS[SERVER], 8080) == "hi 8080"
    assert connect(REMOTE, IPS[SERVER], 8080) == "hi 8080"


def test_deny_all_ingress_rejects_bridged_and_routed_traffic_but_not_the_node(node):
    apply({"podSelector": {}, "policyTypes": ["Ingress"]})
    try:
        assert connect(CLIENT_A, IPS[SERVER], 8080) == "unreachable"      # rejected, not left to time out
        assert connect(REMOTE, IPS[SERVER], 8080) == "unreachable"
        assert connect(NODE, IPS[SERVER], 8080) == "hi 8080"               # the node (kubelet probes) gets in
    finally:
        cleanup()
    assert connect(CLIENT_A, IPS[SERVER], 8080) == "hi 8080"


def test_allow_by_label_and_named_port_opens_exactly_that_path(node):
    apply({"podSelector": {}, "policyTypes": ["Ingress"]},
          {"podSelector": SERVER_SEL, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                                   "ports": [{"port": "web"}]}]})
    try:
        assert connect(CLIENT_A, IPS[SERVER], 8080) == "hi 8080"
        assert connect(CLIENT_A, IPS[SERVER], 9090) == "unreachable"       # not the named port
        assert connect(CLIENT_B, IPS[SERVER], 8080) == "unreachable"       # not the label
        assert connect(REMOTE, IPS[SERVER], 8080) == "unreachable"
        # the clients themselves are isolated too (podSelector {}): the server's replies still pass
        assert connect(SERVER, IPS[CLIENT_A], 8080) == "unreachable"
    finally:
        cleanup()


def test_ip_block_with_except_for_routed_traffic(node):
    apply({"podSelector": SERVER_SEL, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]})
    try:
        assert connect(REMOTE, IPS[SERVER], 9090) == "hi 9090"
        assert connect(CLIENT_A, IPS[SERVER], 9090) == "unreachable"
        apply({"podSelector": SERVER_SEL, "ingress": [{"from": [{"ipBlock": {
            "cidr": "192.0.2.0/24", "except": [f"{REMOTE_IP}/32"]}}]}]})
        assert connect(REMOTE, IPS[SERVER], 9090) == "unreachable"
    finally:
        cleanup()


def test_egress_deny_at_the_source_and_port_range(node):
    apply({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
           "egress": [{"to": [{"podSelector": SERVER_SEL}], "ports": [{"port": 9000, "endPort": 9100}]}]})
    try:
        assert connect(CLIENT_A, IPS[SERVER], 9090) == "hi 9090"
        assert connect(CLIENT_A, IPS[SERVER], 8080) == "unreachable"
        assert connect(CLIENT_A, REMOTE_IP, 22) == "unreachable"
        assert connect(CLIENT_B, IPS[SERVER], 8080) == "hi 8080"          # not selected: open
    finally:
        cleanup()


def test_established_connections_and_atomic_updates_drop_nothing(node):
    """Re-applying the ruleset (as every sync does) while an allowed client connects in a loop."""
    spec = {"podSelector": SERVER_SEL, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}
    apply(spec)
    try:
        client = subprocess.Popen(["ip", "netns", "exec", CLIENT_A, sys.executable, "-c", CONNECT, IPS[SERVER],
                                   "8080", "300"], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        swaps = 0
        while client.poll() is None and time.monotonic() < deadline:
            apply(spec)
            swaps += 1
        out, _ = client.communicate(timeout=30)
        assert swaps >= 3, swaps
        assert out.count("hi 8080") == 300, f"{300 - out.count('hi 8080')} of 300 failed during {swaps} swaps"
    finally:
        cleanup()


def test_cleanup_leaves_nothing_and_is_idempotent(node):
    apply({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    held = leaks()
    assert held["tables"] == 1 and held["chains"] >= 5 and held["maps"] == 2 and held["rules"] > 0
    cleanup()
    assert leaks() == {"tables": 0, "chains": 0, "rules": 0, "maps": 0, "sets": 0}
    cleanup()
    assert connect(CLIENT_B, IPS[SERVER], 8080) == "hi 8080"
