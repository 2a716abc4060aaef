"""The userspace proxy mode in a one-node netns lab (tests/support/netlab.py): real listeners,
real REDIRECT rules, real echo pods. Root is required (netns, iptables); nothing touches the
test runner's own netns."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName  # noqa: E402
from tests.support.netlab import NODE_IP, REPO, TCP_PORT, UDP_PORT, NetLab, ProxyProcess  # noqa: E402

VIP = "10.43.0.20"
LB_IP = "10.45.0.5"
EXTERNAL_IP = "10.45.0.6"


@pytest.fixture(scope="module")
def lab():
    with NetLab(pods=3) as lab:
        # the LoadBalancer ingress IP and an externalIP are routed to the node (as ServiceLB's
    # announcement, or the admin's routing, would)
        lab.exec("host", "ip", "route", "add", LB_IP, "via", NODE_IP)
        lab.exec("host", "ip", "route", "add", EXTERNAL_IP, "via", NODE_IP)
        yield lab


@pytest.fixture
def proxy(lab):
    with ProxyProcess(lab, "userspace") as p:
        yield p
        leaks = p.cleanup()
        assert set(leaks.values()) == {0}, leaks


def _pods(answers):
    assert None not in answers, answers
    return collections.Counter(a.split()[0] for a in answers)


def _eps(lab, port=TCP_PORT, pods=None):
    return [Endpoint(ip, port, node_name="node-1", is_local=True)
            for pod, ip in zip(lab.pods, lab.pod_ips) if pods is None or pod in pods]


def test_round_robin_exact(lab, proxy):
    spn = ServicePortName("default", "web", "", "TCP")
    proxy.sync({spn: ServicePort(VIP, 80)}, {spn: _eps(lab)})
    hits = _pods(lab.connect_many("p0", VIP, 80, 30))
    assert hits == {"p0": 10, "p1": 10, "p2": 10}
    # a new connection that fails (endpoint p1 gone silently: its port closed) tries the next one
    leaks = proxy.count_leaks()
    assert leaks["listeners"] == 1 and leaks["chains"] == 4 and leaks["rules"] > 0, leaks


def test_client_ip_affinity_sticks(lab, proxy):
    spn = ServicePortName("default", "sticky", "http", "TCP")
    proxy.sync({spn: ServicePort(VIP, 80, session_affinity="ClientIP", sticky_max_age_seconds=60)},
               {spn: _eps(lab)})
    seen = {}
    for client in ("p0", "p1", "p2"):
        hits = _pods(lab.connect_many(client, VIP, 80, 10))
        assert len(hits) == 1, (client, hits)
        seen[client] = next(iter(hits))
    # three clients, round robin for their first connections: three different pods
    assert sorted(seen.values()) == ["p0", "p1", "p2"]


def test_udp_round_robin_and_sessions(lab, proxy):
    spn = ServicePortName("default", "dns", "dns", "UDP")
    proxy.sync({spn: ServicePort(VIP, 53, protocol="UDP")}, {spn: _eps(lab, UDP_PORT)})
    hits = _pods(lab.udp_many("p0", VIP, 53, 9))
    assert hits == {"p0": 3, "p1": 3, "p2": 3}
    # the same client port reuses its session while it is not idle: one pod
    same = _pods(lab.udp_many("p1", VIP, 53, 5, src_port=40000))
    assert len(same) == 1, same
    assert proxy.count_leaks()["udp_sessions"] >= 1
    time.sleep(1.5)     # the idle timeout (1 s) ends the sessions
    assert proxy.count_leaks()["udp_sessions"] == 0
    # ClientIP affinity holds across sessions (new source ports)
    proxy.sync({spn: ServicePort(VIP, 53, protocol="UDP", session_affinity="ClientIP")}, {spn: _eps(lab, UDP_PORT)})
    assert len(_pods(lab.udp_many("p2", VIP, 53, 6))) == 1


def test_nodeport_and_load_balancer_from_host(lab, proxy):
    spn = ServicePortName("default", "ext", "", "TCP")
    svc = ServicePort(VIP, 80, node_port=30080, load_balancer_ips=(LB_IP,), external_ips=(EXTERNAL_IP,))
    proxy.sync({spn: svc}, {spn: _eps(lab)})
    assert _pods(lab.connect_many("host", NODE_IP, 30080, 6)) == {"p0": 2, "p1": 2, "p2": 2}
    assert _pods(lab.connect_many("host", LB_IP, 80, 3)) == {"p0": 1, "p1": 1, "p2": 1}
    assert _pods(lab.connect_many("host", EXTERNAL_IP, 80, 3)) == {"p0": 1, "p1": 1, "p2": 1}
    # pods reach the NodePort on the node's address too, and the pod sees the node as client
    answers = lab.connect_many("p0", NODE_IP, 30080, 3)
    assert _pods(answers) == {"p0": 1, "p1": 1, "p2": 1}
    assert {a.split()[1] for a in answers} <= {"10.42.0.1", NODE_IP}
    # the node's own processes reach the NodePort (KUBE-NODEPORT-HOST)
    assert len(_pods(lab.connect_many("node", NODE_IP, 30080, 3))) == 3
    # hairpin: a pod reaches itself through the VIP
    assert "p2" in _pods(lab.connect_many("p2", VIP, 80, 3))


def test_external_policy_local_gets_its_own_listener(lab, proxy):
    spn = ServicePortName("default", "local", "", "TCP")
    svc = ServicePort(VIP, 80, node_port=30081, external_policy_local=True)
    eps = [Endpoint(ip, TCP_PORT, node_name="node-1" if i == 0 else "node-2", is_local=i == 0)
           for i, ip in enumerate(lab.pod_ips)]
    proxy.sync({spn: svc}, {spn: eps})
    assert proxy.count_leaks()["listeners"] == 2
    assert _pods(lab.connect_many("host", NODE_IP, 30081, 4)) == {"p0": 4}
    assert len(_pods(lab.connect_many("p1", VIP, 80, 6))) == 3


def _popen(lab, where, code):
    return subprocess.Popen(["ip", "netns", "exec", lab.ns(where), sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


STREAM_ECHO = """
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 9000)); srv.listen(8); print("ready", flush=True)
c, _ = srv.accept()
while True:
    d = c.recv(100)
    if not d:
        break
    c.sendall(d)
"""

STREAM_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 90), timeout=5)
for line in sys.stdin:
    s.sendall(line.encode()); print(s.recv(100).decode().strip(), flush=True)
"""


def test_endpoint_change_keeps_established_relays(lab, proxy):
    spn = ServicePortName("default", "stream", "", "TCP")
    server = _popen(lab, "p0", STREAM_ECHO)
    client = None
    try:
        assert server.stdout.readline().strip() == "ready"
        proxy.sync({spn: ServicePort(VIP, 90)}, {spn: [Endpoint(lab.pod_ips[0], 9000)]})
        client = subprocess.Popen(["ip", "netns", "exec", lab.ns("p1"), sys.executable, "-c", STREAM_CLIENT, VIP],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        client.stdin.write("one\n")
        assert client.stdout.readline().strip() == "one"
        # the endpoint leaves the service: new connections go elsewhere, this one goes on
        proxy.sync({spn: ServicePort(VIP, 90)}, {spn: [Endpoint(lab.pod_ips[2], TCP_PORT)]})
        assert _pods(lab.connect_many("p0", VIP, 90, 3)) == {"p2": 3}
        client.stdin.write("two\n")
        assert client.stdout.readline().strip() == "two"
        client.stdin.close()
        assert client.wait(timeout=10) == 0
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    web = ServicePortName("default", "web", "", "TCP")
    proxy.sync({web: ServicePort(VIP, 80)}, {web: _eps(lab, pods={"p2"})})
    assert _pods(lab.connect_many("p0", VIP, 80, 5)) == {"p2": 5}
    proxy.sync({web: ServicePort(VIP, 80)}, {web: _eps(lab, pods={"p0", "p1"})})
    assert _pods(lab.connect_many("p0", VIP, 80, 4)) == {"p0": 2, "p1": 2}


def test_dead_endpoint_is_skipped(lab, proxy):
    spn = ServicePortName("default", "web", "", "TCP")
    eps = _eps(lab) + [Endpoint("10.42.0.10", 9999)]   # a port nobody listens on: refused
    proxy.sync({spn: ServicePort(VIP, 80)}, {spn: eps})
    answers = lab.connect_many("p1", VIP, 80, 8)
    assert None not in answers
    assert set(_pods(answers)) == {"p0", "p1", "p2"}


def test_no_endpoints_fails_fast(lab, proxy):
    spn = ServicePortName("default", "empty", "", "TCP")
    proxy.sync({spn: ServicePort(VIP, 80)}, {spn: []})
    t0 = time.monotonic()
    assert lab.connect_many("p0", VIP, 80, 3) == [None, None, None]
    assert time.monotonic() - t0 < 5


def test_removed_service_port_closes_listener_and_empty_sync_leaves_nothing(lab, proxy):
    a = ServicePortName("default", "a", "", "TCP")
    b = ServicePortName("default", "b", "", "UDP")
    proxy.sync({a: ServicePort(VIP, 80), b: ServicePort(VIP, 53, protocol="UDP")},
               {a: _eps(lab), b: _eps(lab, UDP_PORT)})
    assert proxy.count_leaks()["listeners"] == 2
    proxy.sync({a: ServicePort(VIP, 80)}, {a: _eps(lab)})
    assert proxy.count_leaks()["listeners"] == 1
    assert lab.udp_many("p0", VIP, 53, 1, timeout=0.5) == [None]
    proxy.sync({}, {})
    assert set(proxy.count_leaks().values()) == {0}
    saved = lab.exec("node", "iptables-save", "-t", "nat").stdout
    assert "KUBE-PORTALS" not in saved and "KUBE-NODEPORT" not in saved


def test_module_cleanup_removes_rules(lab):
    with ProxyProcess(lab, "userspace") as p:
        spn = ServicePortName("default", "web", "", "TCP")
        p.sync({spn: ServicePort(VIP, 80, node_port=30082)}, {spn: _eps(lab)})
    # the process is gone; its rules stay (as a real kube-proxy's) until cleanup()
    assert "KUBE-PORTALS-CONTAINER" in lab.exec("node", "iptables-save", "-t", "nat").stdout
    subprocess.run(["ip", "netns", "exec", lab.ns("node"), sys.executable, "-c",
                    "from kubeling.proxy import userspace; userspace.cleanup()"], cwd=REPO, check=True)
    saved = lab.exec("node", "iptables-save", "-t", "nat").stdout
    assert "KUBE-PORTALS" not in saved and "KUBE-NODEPORT" not in saved, saved
    assert "KUBE-" not in lab.exec("host", "iptables-save", "-t", "nat").stdout


class UvloopProxyProcess(ProxyProcess):
    """`ProxyProcess` with uvloop as the event loop, as ``kubeling proxy`` runs (cli/_run.py)."""

    def __enter__(self):
        code = ("import sys, asyncio, runpy, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                f"sys.argv = ['netlab_proxy', '--mode', {self.mode!r}, '--node-name', {self.node_name!r}, "
                f"'--node-ip', {NODE_IP!r}]; runpy.run_module('tests.support.netlab_proxy', run_name='__main__')")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.lab.node, sys.executable, "-c", code], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        answer = self._read()
        assert not answer.get("error"), answer
        return self


SINK = """
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 9100)); srv.listen(8); print("ready", flush=True)
buf = bytearray(1 << 20)
for _ in range(3):
    c, _ = srv.accept()
    n = 0
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(str(n).encode()); c.close()
"""

SOURCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], 91), timeout=20)
chunk = bytes(range(256)) * 4096
for _ in range(int(sys.argv[2])):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_bulk_transfer_is_complete(lab, loop):
    """Every byte of a bulk upload arrives (the client starts sending before the relay has
    dialled its endpoint), and the half-close passes through; under both event loops."""
    cls = UvloopProxyProcess if loop == "uvloop" else ProxyProcess
    sink = _popen(lab, "p1", SINK)
    try:
        assert sink.stdout.readline().strip() == "ready"
        with cls(lab, "userspace") as p:
            spn = ServicePortName("default", "sink")
            p.sync({spn: ServicePort(VIP, 91)}, {spn: [Endpoint(lab.pod_ips[1], 9100)]})
            for _ in range(3):
                out = lab.exec("p0", sys.executable, "-c", SOURCE, VIP, "64", timeout=60).stdout.strip()
                assert out == str(64 * 1024 * 1024)
            assert set(p.cleanup().values()) == {0}
    finally:
        sink.kill()
        sink.wait()


def test_partial_syncs(lab, proxy):
    """Syncs naming the changed ports: an endpoint-only change runs no iptables command and
    takes effect at once; added and removed ports get and lose their listeners and rules."""
    a, b = ServicePortName("default", "a"), ServicePortName("default", "b")
    svcs = {a: ServicePort(VIP, 80)}
    proxy.sync(svcs, {a: _eps(lab)})
    rules_before = lab.exec("node", "iptables-save", "-t", "nat").stdout.count("-A KUBE-")
    proxy.sync(svcs, {a: _eps(lab, pods={"p1"})}, changed={a})
    assert _pods(lab.connect_many("p0", VIP, 80, 3)) == {"p1": 3}
    svcs = {a: ServicePort(VIP, 80), b: ServicePort("10.43.0.21", 81, node_port=30083)}
    proxy.sync(svcs, {a: _eps(lab, pods={"p1"}), b: _eps(lab, pods={"p2"})}, changed={b})
    assert _pods(lab.connect_many("p0", "10.43.0.21", 81, 2)) == {"p2": 2}
    assert _pods(lab.connect_many("host", NODE_IP, 30083, 2)) == {"p2": 2}
    assert lab.exec("node", "iptables-save", "-t", "nat").stdout.count("-A KUBE-") > rules_before
    proxy.sync({b: svcs[b]}, {b: _eps(lab, pods={"p2"})}, changed={a})
    assert proxy.count_leaks()["listeners"] == 1
    assert lab.connect_many("p0", VIP, 80, 1, timeout=1) == [None]
    assert _pods(lab.connect_many("p0", "10.43.0.21", 81, 1)) == {"p2": 1}
