"""The nftables proxy mode on a real data plane: `tests.support.netlab` builds a node netns with
three echo pods and a "host" netns outside the node; the mode runs in the node netns
(`ProxyProcess`), and clients connect from pods and from the host. Nothing here touches the
test's own network namespace; every namespace is deleted at the end.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName  # noqa: E402
from tests.support.netlab import GATEWAY, HOST_IP, NODE_IP, TCP_PORT, UDP_PORT, NetLab, ProxyProcess  # noqa: E402

WEB = ServicePortName("default", "web", "", "TCP")
DNS = ServicePortName("default", "dns", "dns", "UDP")
EMPTY = ServicePortName("default", "empty", "", "TCP")
LB_NET, LB_IP = "10.45.0.0/24", "10.45.0.100"
ZERO = {"chains": 0, "rules": 0, "sets": 0, "elements": 0}


@pytest.fixture(scope="module")
def lab():
    with NetLab(pods=3) as lab:
        # the host reaches load balancer IPs through the node (as an L2 announcement would)
        lab.exec("host", "ip", "route", "add", LB_NET, "via", NODE_IP)
        yield lab


@pytest.fixture
def proxy(lab):
    with ProxyProcess(lab, "nftables") as proxy:
        try:
            yield proxy
        finally:
            assert proxy.cleanup() == ZERO
            assert "kube-proxy" not in lab.exec("node", "nft", "list", "tables").stdout


def eps(lab, port=TCP_PORT, local=(0, 1, 2), pods=(0, 1, 2)):
    return [Endpoint(lab.pod_ips[i], port, node_name="node-1" if i in local else "node-2", is_local=i in local)
            for i in pods]


def pods_hit(answers):
    assert None not in answers, answers
    return collections.Counter(a.split()[0] for a in answers)


def sources(answers):
    return {a.split()[1] for a in answers}


def test_cluster_ip_hits_every_endpoint_and_hairpins(lab, proxy):
    proxy.sync({WEB: ServicePort("10.43.0.20", 80)}, {WEB: eps(lab)})
    answers = lab.connect_many("p1", "10.43.0.20", 80, 30)
    assert set(pods_hit(answers)) == {"p0", "p1", "p2"}
    # pod sources are kept; p1 reaching itself through the VIP is masqueraded (hairpin)
    for a in answers:
        pod, src = a.split()
        assert src == (GATEWAY if pod == "p1" else lab.ip("p1")), a


def test_udp_cluster_ip(lab, proxy):
    proxy.sync({DNS: ServicePort("10.43.0.10", 53, protocol="UDP")}, {DNS: eps(lab, UDP_PORT)})
    answers = lab.udp_many("p0", "10.43.0.10", 53, 30)
    assert set(pods_hit(answers)) == {"p0", "p1", "p2"}


def test_client_ip_affinity_sticks(lab, proxy):
    svc = ServicePort("10.43.0.21", 80, session_affinity="ClientIP", sticky_max_age_seconds=60)
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    for client in ("p0", "p2"):
        hit = pods_hit(lab.connect_many(client, "10.43.0.21", 80, 15))
        assert len(hit) == 1, (client, hit)
    sets = lab.exec("node", "nft", "list", "sets", "ip").stdout
    assert "flags dynamic,timeout" in sets and "timeout 1m" in sets
    table = lab.exec("node", "nft", "list", "table", "ip", "kube-proxy").stdout
    assert lab.ip("p0") in table and lab.ip("p2") in table          # the remembered clients
    # an unrelated endpoint change keeps a client's pod while it stays an endpoint
    pinned = pods_hit(lab.connect_many("p0", "10.43.0.21", 80, 1)).most_common(1)[0][0]
    keep = [i for i in range(3) if f"p{i}" == pinned] + [i for i in range(3) if f"p{i}" != pinned][:1]
    proxy.sync({WEB: svc}, {WEB: eps(lab, pods=tuple(keep))}, changed={WEB})
    assert set(pods_hit(lab.connect_many("p0", "10.43.0.21", 80, 10))) == {pinned}


def test_endpoint_change_is_live_after_a_partial_sync(lab, proxy):
    proxy.sync({WEB: ServicePort("10.43.0.22", 80)}, {WEB: eps(lab, pods=(0,))})
    assert set(pods_hit(lab.connect_many("p2", "10.43.0.22", 80, 5))) == {"p0"}
    took = proxy.sync({WEB: ServicePort("10.43.0.22", 80)}, {WEB: eps(lab, pods=(1,))}, changed={WEB})
    assert set(pods_hit(lab.connect_many("p2", "10.43.0.22", 80, 5))) == {"p1"}
    assert took["seconds"] < 1.0


def test_node_port_from_the_host(lab, proxy):
    svc = ServicePort("10.43.0.23", 80, node_port=30080)
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    answers = lab.connect_many("host", NODE_IP, 30080, 30)
    assert set(pods_hit(answers)) == {"p0", "p1", "p2"}
    assert sources(answers) == {GATEWAY}                 # Cluster policy: masqueraded
    # the ClusterIP of the same service, from the host (routed to the node): masqueraded too
    assert sources(lab.connect_many("host", "10.43.0.23", 80, 5)) == {GATEWAY}


def test_external_traffic_policy_local_keeps_the_client_ip(lab, proxy):
    svc = ServicePort("10.43.0.24", 80, node_port=30081, load_balancer_ips=(LB_IP,), external_policy_local=True)
    proxy.sync({WEB: svc}, {WEB: eps(lab, local=(2,))})
    answers = lab.connect_many("host", NODE_IP, 30081, 15)
    assert set(pods_hit(answers)) == {"p2"} and sources(answers) == {HOST_IP}
    # pods short-circuit to every endpoint
    assert set(pods_hit(lab.connect_many("p0", NODE_IP, 30081, 30))) == {"p0", "p1", "p2"}
    # no local endpoint: external traffic is dropped, not rejected
    proxy.sync({WEB: svc}, {WEB: eps(lab, local=())}, changed={WEB})
    t0 = time.monotonic()
    assert lab.connect_many("host", NODE_IP, 30081, 1, timeout=1.0) == [None]
    assert time.monotonic() - t0 >= 0.9
    # (the LB IP is not served either; the lab's node has no route onwards for it, so routing
    # answers before the forward hook's drop)
    assert lab.connect_many("host", LB_IP, 80, 1, timeout=1.0) == [None]
    # ... while pods still short-circuit to the cluster's endpoints
    assert set(pods_hit(lab.connect_many("p0", LB_IP, 80, 30))) == {"p0", "p1", "p2"}


def test_load_balancer_ip_and_source_ranges(lab, proxy):
    svc = ServicePort("10.43.0.25", 80, node_port=30082, load_balancer_ips=(LB_IP,))
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    assert set(pods_hit(lab.connect_many("host", LB_IP, 80, 30))) == {"p0", "p1", "p2"}
    closed = ServicePort("10.43.0.25", 80, node_port=30082, load_balancer_ips=(LB_IP,),
                         load_balancer_source_ranges=("192.0.2.0/24",))
    proxy.sync({WEB: closed}, {WEB: eps(lab)}, changed={WEB})
    assert lab.connect_many("host", LB_IP, 80, 1, timeout=1.0) == [None]
    assert set(pods_hit(lab.connect_many("host", NODE_IP, 30082, 3))) <= {"p0", "p1", "p2"}   # NodePort: no firewall
    opened = ServicePort("10.43.0.25", 80, node_port=30082, load_balancer_ips=(LB_IP,),
                         load_balancer_source_ranges=("192.0.2.0/24", f"{HOST_IP}/32"))
    proxy.sync({WEB: opened}, {WEB: eps(lab)}, changed={WEB})
    assert len(pods_hit(lab.connect_many("host", LB_IP, 80, 3))) >= 1


def test_no_endpoints_and_unknown_ports_are_rejected(lab, proxy):
    services = {WEB: ServicePort("10.43.0.26", 80, node_port=30083), EMPTY: ServicePort("10.43.0.27", 80, node_port=30084)}
    proxy.sync(services, {WEB: eps(lab), EMPTY: []})
    for where, ip, port in (("p0", "10.43.0.27", 80), ("host", "10.43.0.27", 80), ("host", NODE_IP, 30084)):
        t0 = time.monotonic()
        assert lab.connect_many(where, ip, port, 3, timeout=3.0) == [None] * 3, (where, ip, port)
        assert time.monotonic() - t0 < 2.5, f"{where} -> {ip}:{port} was not rejected at once"
    rejected = lab.exec("node", "nft", "list", "chain", "ip", "kube-proxy", "reject-chain").stdout
    assert "reject" in rejected
    # another port of a ClusterIP, and an address of the service range no service holds: no answer
    assert lab.connect_many("p0", "10.43.0.26", 81, 1, timeout=1.0) == [None]
    assert lab.connect_many("p0", "10.43.0.99", 80, 1, timeout=1.0) == [None]
    # endpoints arrive: the same ClusterIP answers
    proxy.sync(services, {WEB: eps(lab), EMPTY: eps(lab, pods=(1,))}, changed={EMPTY})
    assert set(pods_hit(lab.connect_many("p0", "10.43.0.27", 80, 3))) == {"p1"}


def test_empty_sync_leaves_only_the_skeleton(lab, proxy):
    services = {WEB: ServicePort("10.43.0.28", 80, node_port=30085, session_affinity="ClientIP"),
                DNS: ServicePort("10.43.0.10", 53, protocol="UDP")}
    proxy.sync(services, {WEB: eps(lab), DNS: eps(lab, UDP_PORT)})
    assert proxy.count_leaks()["chains"] == 2 * (1 + 3) + 1
    proxy.sync({}, {}, changed=set(services))
    assert proxy.count_leaks() == ZERO
