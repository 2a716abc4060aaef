"""The iptables proxy mode on a real data plane: `tests.support.netlab` builds a node netns with
three echo pods and a "host" netns outside the node; the mode runs in the node netns
(`ProxyProcess`), and clients connect from pods, the node and the host. Nothing here touches
the test's own network namespace; every namespace is deleted at the end.
"""

from __future__ import annotations

import collections
import subprocess
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


@pytest.fixture(scope="module")
def lab():
    with NetLab(pods=3) as lab:
        yield lab


@pytest.fixture
def proxy(lab):
    with ProxyProcess(lab, "iptables") as proxy:
        try:
            yield proxy
        finally:
            leaks = proxy.cleanup()
            assert leaks == {"chains": 0, "rules": 0}
            assert "KUBE-" not in lab.exec("node", "iptables-save").stdout


def eps(lab, port=TCP_PORT, local=(0, 1, 2)):
    return [Endpoint(ip, port, node_name="node-1" if i in local else "node-2", is_local=i in local)
            for i, ip in enumerate(lab.pod_ips)]


def pods_hit(answers):
    assert None not in answers, answers
    return collections.Counter(a.split()[0] for a in answers)


def sources(answers):
    return {a.split()[1] for a in answers}


def test_cluster_ip_hits_every_endpoint_and_hairpins(lab, proxy):
    proxy.sync({WEB: ServicePort("10.43.0.20", 80)}, {WEB: eps(lab)})
    hit = pods_hit(lab.connect_many("p1", "10.43.0.20", 80, 30))
    assert set(hit) == {"p0", "p1", "p2"}, hit
    # hairpin: p1 reaching itself through the VIP is masqueraded (to the bridge's address),
    # other pods see p1's own address
    answers = lab.connect_many("p1", "10.43.0.20", 80, 30)
    for a in answers:
        pod, src = a.split()
        assert src == (GATEWAY if pod == "p1" else lab.ip("p1")), a
    # (not from the node itself: the lab's node has an `unreachable` route for the service CIDR,
    # which locally generated packets meet before the nat OUTPUT hook)


def test_client_ip_affinity_sticks(lab, proxy):
    svc = ServicePort("10.43.0.21", 80, session_affinity="ClientIP", sticky_max_age_seconds=60)
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    for client in ("p0", "p2"):
        hit = pods_hit(lab.connect_many(client, "10.43.0.21", 80, 15))
        assert len(hit) == 1, (client, hit)
    # affinity is kept in the rules: the recent match with the timeout
    save = lab.exec("node", "iptables-save", "-t", "nat").stdout
    assert "--rcheck --seconds 60 --reap" in save and "--set" in save


def test_nodeport_and_load_balancer_ip_from_the_host(lab, proxy):
    svc = ServicePort("10.43.0.22", 80, node_port=30080, load_balancer_ips=(NODE_IP,), external_ips=())
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    for port in (30080, 80):
        answers = lab.connect_many("host", NODE_IP, port, 30)
        assert set(pods_hit(answers)) == {"p0", "p1", "p2"}
        assert sources(answers) == {GATEWAY}        # Cluster policy: masqueraded
    # a NodePort also answers to a pod (via the node's address)
    assert None not in lab.connect_many("p0", NODE_IP, 30080, 5)


def test_external_traffic_policy_local_keeps_the_client_ip(lab, proxy):
    svc = ServicePort("10.43.0.23", 80, node_port=30081, external_policy_local=True)
    proxy.sync({WEB: svc}, {WEB: eps(lab, local=(1,))})
    answers = lab.connect_many("host", NODE_IP, 30081, 20)
    assert pods_hit(answers) == {"p1": 20}
    assert sources(answers) == {HOST_IP}
    # the ClusterIP still goes to every endpoint (internal policy Cluster)
    assert set(pods_hit(lab.connect_many("p0", "10.43.0.23", 80, 30))) == {"p0", "p1", "p2"}
    # no local endpoint: external traffic is dropped (not rejected), internal still served
    proxy.sync({WEB: svc}, {WEB: eps(lab, local=())})
    t0 = time.monotonic()
    assert lab.connect_many("host", NODE_IP, 30081, 1, timeout=1.0) == [None]
    assert time.monotonic() - t0 >= 0.9
    save = lab.exec("node", "iptables-save", "-t", "filter").stdout
    assert "default/web has no local endpoints" in save and "-j DROP" in save
    assert None not in lab.connect_many("p0", "10.43.0.23", 80, 5)


def test_internal_traffic_policy_local(lab, proxy):
    svc = ServicePort("10.43.0.24", 80, internal_policy_local=True)
    proxy.sync({WEB: svc}, {WEB: eps(lab, local=(2,))})
    assert pods_hit(lab.connect_many("p0", "10.43.0.24", 80, 15)) == {"p2": 15}


def test_no_endpoints_is_rejected_fast(lab, proxy):
    proxy.sync({EMPTY: ServicePort("10.43.0.25", 80, node_port=30082)}, {EMPTY: []})
    # one connection from each side: the kernel rate-limits ICMP errors per source (about one a
    # second after a small burst), for a REJECT as for an unreachable route
    for where, ip, port in (("host", NODE_IP, 30082), ("p2", "10.43.0.25", 80)):
        t0 = time.monotonic()
        assert lab.connect_many(where, ip, port, 1, timeout=5.0) == [None]
        assert time.monotonic() - t0 < 2.5, where       # refused at once; a drop would wait 5 s
    save = lab.exec("node", "iptables-save", "-t", "filter").stdout
    assert save.count('"default/empty has no endpoints"') == 2
    assert "KUBE-SVC-" not in lab.exec("node", "iptables-save", "-t", "nat").stdout


def test_udp_service(lab, proxy):
    proxy.sync({DNS: ServicePort("10.43.0.26", 53, protocol="UDP")}, {DNS: eps(lab, port=UDP_PORT)})
    assert set(pods_hit(lab.udp_many("p0", "10.43.0.26", 53, 30))) == {"p0", "p1", "p2"}


def test_load_balancer_source_ranges(lab, proxy):
    svc = ServicePort("10.43.0.27", 80, load_balancer_ips=(NODE_IP,), load_balancer_source_ranges=("10.99.0.0/16",))
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    assert lab.connect_many("host", NODE_IP, 80, 1, timeout=1.0) == [None]     # not in the ranges
    svc = ServicePort("10.43.0.27", 80, load_balancer_ips=(NODE_IP,), load_balancer_source_ranges=(f"{HOST_IP}/32",))
    proxy.sync({WEB: svc}, {WEB: eps(lab)})
    assert None not in lab.connect_many("host", NODE_IP, 80, 5)


def test_partial_sync_rewrites_only_the_changed_service(lab, proxy):
    other = ServicePortName("default", "other", "", "TCP")
    services = {WEB: ServicePort("10.43.0.28", 80), other: ServicePort("10.43.0.29", 80)}
    proxy.sync(services, {WEB: eps(lab), other: eps(lab)})
    before = lab.exec("node", "iptables-save", "-t", "nat").stdout
    # WEB loses two endpoints, named as changed; `other` is not rewritten but keeps working
    one = [eps(lab)[0]]
    proxy.sync(services, {WEB: one, other: eps(lab)}, changed={WEB})
    assert pods_hit(lab.connect_many("p1", "10.43.0.28", 80, 10)) == {"p0": 10}
    assert set(pods_hit(lab.connect_many("p1", "10.43.0.29", 80, 30))) == {"p0", "p1", "p2"}
    after = lab.exec("node", "iptables-save", "-t", "nat").stdout
    assert after.count(":KUBE-SEP-") == before.count(":KUBE-SEP-") - 2     # the stale endpoint chains went
    # the service goes away in a partial sync: its chains go too
    proxy.sync({other: services[other]}, {other: eps(lab)}, changed={WEB})
    assert "10.43.0.28" not in lab.exec("node", "iptables-save", "-t", "nat").stdout
    assert proxy.count_leaks()["chains"] == 1 + 3     # KUBE-SVC + 3 KUBE-SEP of `other`
    # and an empty sync leaves nothing behind
    proxy.sync({}, {})
    assert proxy.count_leaks() == {"chains": 0, "rules": 0}


def test_full_sync_removes_leftovers_of_an_earlier_proxy(lab):
    with ProxyProcess(lab, "iptables") as first:
        first.sync({WEB: ServicePort("10.43.0.30", 80)}, {WEB: eps(lab)})
    # the first process exited without cleanup: its rules stay (as a real kube-proxy's do)
    with ProxyProcess(lab, "iptables") as second:
        assert second.count_leaks()["chains"] == 4
        second.sync({}, {})
        assert second.count_leaks() == {"chains": 0, "rules": 0}
        assert second.cleanup() == {"chains": 0, "rules": 0}
    assert "KUBE-" not in lab.exec("node", "iptables-save").stdout


CLEAR = """
import sys
from kubeling.proxy import conntrack
from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName
spn = ServicePortName("default", "dns", "dns", "UDP")
svc = {spn: ServicePort("10.43.0.31", 53, "UDP")}
flows = conntrack.stale_flows(svc, {spn: [Endpoint(sys.argv[1], 8081)]}, svc, {spn: [Endpoint(sys.argv[2], 8081)]}, {spn})
print(conntrack.clear(flows))
"""


def test_stale_udp_conntrack_entries_are_cleared(lab, proxy):
    svc = {DNS: ServicePort("10.43.0.31", 53, protocol="UDP")}
    p1, p2 = lab.ip("p1"), lab.ip("p2")
    proxy.sync(svc, {DNS: [Endpoint(p1, UDP_PORT)]})
    assert pods_hit(lab.udp_many("p0", "10.43.0.31", 53, 2, src_port=40053)) == {"p1": 2}
    # p1 leaves the service (its server still runs): the flow's conntrack entry still points at it
    proxy.sync(svc, {DNS: [Endpoint(p2, UDP_PORT)]}, changed={DNS})
    assert pods_hit(lab.udp_many("p0", "10.43.0.31", 53, 1, src_port=40053)) == {"p1": 1}
    out = subprocess.run(["ip", "netns", "exec", lab.ns("node"), sys.executable, "-c", CLEAR, p1, p2],
                         cwd=str(Path(__file__).resolve().parents[2]), capture_output=True, text=True, check=True).stdout
    assert int(out) >= 1
    assert pods_hit(lab.udp_many("p0", "10.43.0.31", 53, 2, src_port=40053)) == {"p2": 2}


def test_periodic_resync_repairs_chains_altered_behind_its_back(lab, proxy):
    from kubeling.proxy.iptables import endpoint_chain, service_chain
    services = {WEB: ServicePort("10.43.0.32", 80)}
    endpoints = {WEB: eps(lab)}
    proxy.sync(services, endpoints)
    svc_chain = service_chain(WEB, "tcp")
    lab.exec("node", "iptables", "-t", "nat", "-F", svc_chain)           # someone flushes it
    sep = endpoint_chain(WEB, "tcp", f"{lab.pod_ips[0]}:{TCP_PORT}")
    lab.exec("node", "iptables", "-t", "nat", "-F", sep)
    assert lab.connect_many("p1", "10.43.0.32", 80, 1, timeout=1.0) == [None]
    proxy.sync(services, endpoints, changed=None)                        # the periodic resync
    assert set(pods_hit(lab.connect_many("p1", "10.43.0.32", 80, 30))) == {"p0", "p1", "p2"}
    # and a chain deleted outright (with the rules jumping to it)
    lab.exec("node", "iptables", "-t", "nat", "-F", svc_chain)
    lab.exec("node", "iptables", "-t", "nat", "-F", sep)
    lab.exec("node", "iptables", "-t", "nat", "-X", sep)
    proxy.sync(services, endpoints, changed=None)
    assert set(pods_hit(lab.connect_many("p1", "10.43.0.32", 80, 30))) == {"p0", "p1", "p2"}


def test_kubeling_proxy_cleanup_removes_the_rules_a_dead_proxy_left(lab):
    with ProxyProcess(lab, "iptables") as gone:
        gone.sync({WEB: ServicePort("10.43.0.33", 80, node_port=30083)}, {WEB: eps(lab), EMPTY: []})
    assert "KUBE-SVC-" in lab.exec("node", "iptables-save").stdout
    for _ in range(2):                                   # idempotent
        done = subprocess.run(["ip", "netns", "exec", lab.ns("node"), sys.executable, "-m", "kubeling.cli.main",
                               "proxy", "--cleanup"], cwd=str(Path(__file__).resolve().parents[2]),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "KUBE-" not in lab.exec("node", "iptables-save").stdout
