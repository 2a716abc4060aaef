"""The userspace mode's balancer (upstream's LoadBalancerRR) and its rule text, without a kernel."""

from __future__ import annotations

import collections

from kubeling.proxy.types import Endpoint, NodeContext, ServicePort, ServicePortName
from kubeling.proxy.userspace import (
    NODEPORT_CONTAINER,
    NODEPORT_HOST,
    PORTALS_CONTAINER,
    PORTALS_HOST,
    LoadBalancerRR,
    Proxier,
    portal_rules,
    removal_batch,
    sync_batch,
)

EPS = [Endpoint(f"10.42.0.{i}", 8080) for i in (10, 11, 12)]
KEY = (ServicePortName("default", "web"), "internal")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_is_exact_and_in_order():
    lb = LoadBalancerRR()
    lb.update(KEY, EPS)
    picks = [lb.next_endpoint(KEY, "10.42.1.5") for _ in range(30)]
    assert picks[:4] == [EPS[0], EPS[1], EPS[2], EPS[0]]
    assert collections.Counter(picks) == {EPS[0]: 10, EPS[1]: 10, EPS[2]: 10}


def test_no_endpoints_and_unknown_key():
    lb = LoadBalancerRR()
    assert lb.next_endpoint(KEY, "1.2.3.4") is None
    lb.update(KEY, [])
    assert lb.next_endpoint(KEY, "1.2.3.4") is None


def test_endpoint_change_keeps_position_and_drops_gone_affinities():
    clock = Clock()
    lb = LoadBalancerRR(clock)
    lb.update(KEY, EPS, affinity=True, ttl=60)
    assert lb.next_endpoint(KEY, "a") == EPS[0]
    assert lb.next_endpoint(KEY, "b") == EPS[1]
    lb.update(KEY, EPS[1:], affinity=True, ttl=60)       # EPS[0] goes
    assert lb.next_endpoint(KEY, "b") == EPS[1]           # b keeps its endpoint
    assert lb.next_endpoint(KEY, "a") in EPS[1:]          # a is re-balanced
    lb.update(KEY, [EPS[2]], affinity=True, ttl=60)
    assert {lb.next_endpoint(KEY, c) for c in "abcd"} == {EPS[2]}


def test_client_ip_affinity_sticks_until_timeout():
    clock = Clock()
    lb = LoadBalancerRR(clock)
    lb.update(KEY, EPS, affinity=True, ttl=10)
    first = {c: lb.next_endpoint(KEY, c) for c in ("c1", "c2", "c3")}
    assert sorted(first.values(), key=str) == sorted(EPS, key=str)    # new clients still round robin
    for _ in range(5):
        clock.now += 9                                                 # each use renews the timeout
        assert all(lb.next_endpoint(KEY, c) == ep for c, ep in first.items())
    clock.now += 10.5                                                  # idle past timeoutSeconds
    assert lb.cleanup_stale_sessions() == 3
    picks = [lb.next_endpoint(KEY, "c1") for _ in range(3)]
    assert len(set(picks)) == 1                                        # sticks again, maybe elsewhere


def test_affinity_reset_on_failed_dial_moves_on():
    lb = LoadBalancerRR()
    lb.update(KEY, EPS, affinity=True, ttl=100)
    a = lb.next_endpoint(KEY, "c")
    b = lb.next_endpoint(KEY, "c", reset_affinity=True)
    assert a != b
    assert lb.next_endpoint(KEY, "c") == b                             # the new one sticks


def test_affinity_turned_off_forgets_clients():
    lb = LoadBalancerRR()
    lb.update(KEY, EPS, affinity=True, ttl=100)
    lb.next_endpoint(KEY, "c")
    lb.update(KEY, EPS, affinity=False)
    assert len({lb.next_endpoint(KEY, "c") for _ in range(3)}) == 3


NODE = NodeContext("n1", ("10.44.0.2",))


def test_portal_rules_cluster_ip_nodeport_lb_external():
    spn = ServicePortName("default", "web", "http", "TCP")
    svc = ServicePort("10.43.0.20", 80, node_port=30080, external_ips=("192.0.2.7",),
                      load_balancer_ips=("10.45.0.5",), load_balancer_source_ranges=("10.44.0.0/24",))
    rules = portal_rules([(spn, "internal", svc, 41000)], NODE, set())
    to = "-j REDIRECT --to-ports 41000"
    for chain in (PORTALS_CONTAINER, PORTALS_HOST):
        assert (f'-A {chain} -d 10.43.0.20/32 -p tcp -m tcp --dport 80 -m comment --comment "default/web:http" {to}'
                in rules)
        assert any(r.startswith(f"-A {chain} -d 192.0.2.7/32 -p tcp") and r.endswith(to) for r in rules)
        assert any(r.startswith(f"-A {chain} -s 10.44.0.0/24 -d 10.45.0.5/32") for r in rules)
    for chain in (NODEPORT_CONTAINER, NODEPORT_HOST):
        assert any(r.startswith(f"-A {chain} -d 10.44.0.2/32 -p tcp -m tcp --dport 30080") and r.endswith(to)
                   for r in rules)
    assert len(rules) == 8


def test_portal_rules_udp_and_separate_external_listener():
    spn = ServicePortName("kube-system", "dns", "dns", "UDP")
    svc = ServicePort("10.43.0.10", 53, protocol="UDP", node_port=30053, external_policy_local=True)
    rules = portal_rules([(spn, "internal", svc, 5000), (spn, "external", svc, 5001)], NODE, {spn})
    internal = [r for r in rules if r.endswith("--to-ports 5000")]
    external = [r for r in rules if r.endswith("--to-ports 5001")]
    assert all("-d 10.43.0.10/32 -p udp -m udp --dport 53" in r for r in internal) and len(internal) == 2
    assert all("--dport 30053" in r for r in external) and len(external) == 2


def test_nodeport_addresses_restrict_destinations():
    node = NodeContext("n1", ("10.44.0.2",), nodeport_addresses=("10.44.0.0/24", "127.0.0.1"))
    spn = ServicePortName("default", "np")
    rules = portal_rules([(spn, "internal", ServicePort("10.43.0.3", 80, node_port=30001), 7)], node, set())
    dsts = sorted(r.split()[3] for r in rules if r.startswith(f"-A {NODEPORT_CONTAINER}"))
    assert dsts == ["10.44.0.0/24", "127.0.0.1/32"]


SAVED = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
:OTHER - [0:0]
-A PREROUTING -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-CONTAINER
-A PREROUTING -j OTHER
-A OUTPUT -m addrtype --dst-type LOCAL -j KUBE-NODEPORT-HOST
-A KUBE-PORTALS-CONTAINER -d 10.43.0.1/32 -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 4000
COMMIT
"""


def test_sync_batch_adds_only_missing_jumps_and_flushes_chains():
    text = sync_batch(SAVED, ["-A KUBE-PORTALS-HOST -d 10.43.0.1/32 -j REDIRECT --to-ports 4000"])
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert {":KUBE-PORTALS-CONTAINER - [0:0]", ":KUBE-PORTALS-HOST - [0:0]", ":KUBE-NODEPORT-CONTAINER - [0:0]",
            ":KUBE-NODEPORT-HOST - [0:0]"} <= set(lines)
    jumps = [ln for ln in lines if ln.startswith(("-I ", "-A PREROUTING", "-A OUTPUT"))]
    assert [j.split()[-1] for j in jumps] == ["KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER"]
    assert jumps[0].startswith("-I OUTPUT 1 ")
    assert "-A PREROUTING -m addrtype --dst-type LOCAL" in jumps[1]


def test_removal_batch_and_empty_sync():
    text = removal_batch(SAVED)
    assert "-D PREROUTING -m comment --comment" in text and "-D OUTPUT -m addrtype" in text
    assert "-X KUBE-PORTALS-CONTAINER" in text and "-X KUBE-NODEPORT-HOST" in text
    assert "OTHER" not in text
    assert sync_batch(SAVED, []) == text
    assert removal_batch("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""


def test_desired_listeners_follow_policies():
    p = Proxier(NODE)
    web, dns = ServicePortName("default", "web"), ServicePortName("default", "dns", "dns", "UDP")
    sctp, headless = ServicePortName("default", "s", "", "SCTP"), ServicePortName("default", "h")
    local = Endpoint("10.42.0.10", 80, is_local=True)
    remote = Endpoint("10.42.1.10", 80, is_local=False)
    notready = Endpoint("10.42.0.11", 80, ready=False, is_local=True)
    services = {
        web: ServicePort("10.43.0.5", 80, node_port=30000, external_policy_local=True),
        dns: ServicePort("10.43.0.10", 53, protocol="UDP", internal_policy_local=True),
        sctp: ServicePort("10.43.0.6", 9, protocol="SCTP"),
        headless: ServicePort("", 80),
    }
    eps = {web: [local, remote, notready], dns: [local, remote]}
    d = p._desired(services, eps)
    assert set(d) == {(web, "internal"), (web, "external"), (dns, "internal")}
    assert d[(web, "internal")][1] == [local, remote]
    assert d[(web, "external")][1] == [local]
    assert d[(dns, "internal")][1] == [local]


def test_bad_addresses_are_left_out_not_fatal():
    spn = ServicePortName("default", "bad")
    svc = ServicePort("10.43.0.9", 80, external_ips=("not-an-ip", "192.0.2.9", "2001:db8::1"),
                      load_balancer_ips=("300.1.1.1",), node_port=30009)
    rules = portal_rules([(spn, "internal", svc, 5)], NodeContext("n1", ("10.44.0.2", "fd00::2")), set())
    assert not any("not-an-ip" in r or "300.1.1.1" in r or "2001:db8" in r or "fd00" in r for r in rules)
    assert any("-d 192.0.2.9/32" in r for r in rules) and any("-d 10.43.0.9/32" in r for r in rules)
    bad_vip = portal_rules([(spn, "internal", ServicePort("10.43.0.999", 80), 5)], NODE, set())
    assert bad_vip == []
