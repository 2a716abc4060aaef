"""The iptables mode's rule generation (no kernel), against upstream's shapes and names; one test
feeds the whole ruleset to ``iptables-restore --test`` inside a throwaway network namespace."""

from __future__ import annotations

import os
import subprocess

from kubeling.proxy.iptables import (Proxier, count_leaks_in, endpoint_chain, external_chain, firewall_chain,
                                     local_chain, parse_save, service_chain, service_rules)
from kubeling.proxy.types import Endpoint, NodeContext, ServicePort, ServicePortName

NODE = NodeContext("node-1", ("10.44.0.2",), cluster_cidr="10.42.0.0/16")
SPN = ServicePortName("ns1", "svc1", "p80", "TCP")
SVC, SVL, EXT, FW = (f(SPN, "tcp") for f in (service_chain, local_chain, external_chain, firewall_chain))


def eps(*ips, local=()):
    return [Endpoint(ip, 80, node_name="node-1" if ip in local else "node-2", is_local=ip in local) for ip in ips]


def sep(ip):
    return endpoint_chain(SPN, "tcp", f"{ip}:80")


def render(services, endpoints, node=NODE):
    p = Proxier(node)
    for spn, svc in services.items():
        p._rules[spn] = service_rules(spn, svc, endpoints.get(spn, ()), node)
    text, chains = p._render(rewrite=None, existing={"nat": {}, "filter": {}})
    return text, parse_save(text), chains


def test_chain_names_hash_as_upstream():
    # the values in upstream's proxier_test.go
    assert SVC == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert sep("10.180.0.1") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert EXT == "KUBE-EXT-XPGD46QRK7WJZT7O" and SVL == "KUBE-SVL-XPGD46QRK7WJZT7O" and FW == "KUBE-FW-XPGD46QRK7WJZT7O"


def test_cluster_ip_with_three_endpoints():
    _, t, chains = render({SPN: ServicePort("172.30.0.41", 80)}, {SPN: eps("10.180.0.1", "10.180.0.2", "10.180.0.3")})
    nat = t["nat"]
    assert nat["KUBE-SERVICES"][0] == (f'-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp '
                                       f'-d 172.30.0.41/32 --dport 80 -j {SVC}')
    assert nat["KUBE-SERVICES"][-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    svc = nat[SVC]
    assert svc[0].endswith("-d 172.30.0.41/32 --dport 80 ! -s 10.42.0.0/16 -j KUBE-MARK-MASQ")
    assert "--probability 0.3333333333 -j " + sep("10.180.0.1") in svc[1]
    assert "--probability 0.5000000000 -j " + sep("10.180.0.2") in svc[2]
    assert "statistic" not in svc[3] and svc[3].endswith("-j " + sep("10.180.0.3"))
    assert nat[sep("10.180.0.1")] == [
        f'-A {sep("10.180.0.1")} -m comment --comment "ns1/svc1:p80" -s 10.180.0.1/32 -j KUBE-MARK-MASQ',
        f'-A {sep("10.180.0.1")} -m comment --comment "ns1/svc1:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80']
    assert chains == {SVC} | {sep(f"10.180.0.{i}") for i in (1, 2, 3)}
    assert EXT not in nat and t["filter"]["KUBE-SERVICES"] == []
    assert nat["KUBE-POSTROUTING"][-1].endswith("-j MASQUERADE --random-fully")
    assert nat["KUBE-MARK-MASQ"] == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]


def test_masquerade_all():
    node = NodeContext("node-1", ("10.44.0.2",), masquerade_all=True)
    _, t, _ = render({SPN: ServicePort("172.30.0.41", 80)}, {SPN: eps("10.180.0.1")}, node)
    assert t["nat"][SVC][0].endswith("--dport 80 -j KUBE-MARK-MASQ") and "! -s" not in t["nat"][SVC][0]


def test_session_affinity_client_ip():
    svc = ServicePort("172.30.0.41", 80, session_affinity="ClientIP", sticky_max_age_seconds=10800)
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.1", "10.180.0.2")})
    rules = t["nat"][SVC]
    a, b = sep("10.180.0.1"), sep("10.180.0.2")
    assert f"-m recent --rcheck --seconds 10800 --reap --name {a} --mask 255.255.255.255 --rsource -j {a}" in rules[1]
    assert f"--name {b}" in rules[2] and "statistic" in rules[3] and rules[4].endswith("-j " + b)
    assert f"-m recent --set --name {a} --mask 255.255.255.255 --rsource -m tcp -p tcp -j DNAT" in t["nat"][a][1]


def test_node_port_and_load_balancer_under_the_cluster_policy():
    svc = ServicePort("172.30.0.41", 80, node_port=3001, load_balancer_ips=("1.2.3.4",), external_ips=("192.168.99.11",))
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.1")})
    nat = t["nat"]
    assert f'-A KUBE-NODEPORTS -m comment --comment "ns1/svc1:p80" -m tcp -p tcp --dport 3001 -j {EXT}' in nat["KUBE-NODEPORTS"]
    assert any("loadbalancer IP" in r and "-d 1.2.3.4/32" in r and r.endswith(EXT) for r in nat["KUBE-SERVICES"])
    assert any("external IP" in r and "-d 192.168.99.11/32" in r and r.endswith(EXT) for r in nat["KUBE-SERVICES"])
    assert nat[EXT] == [f'-A {EXT} -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" '
                        f'-j KUBE-MARK-MASQ', f"-A {EXT} -j {SVC}"]


def test_external_traffic_policy_local():
    svc = ServicePort("172.30.0.41", 80, node_port=3001, load_balancer_ips=("1.2.3.4",), external_policy_local=True,
                      health_check_node_port=30000)
    _, t, chains = render({SPN: svc}, {SPN: eps("10.180.0.1", "10.180.0.2", local=("10.180.0.2",))})
    nat = t["nat"]
    ext = nat[EXT]
    assert "pod traffic for ns1/svc1:p80 external destinations" in ext[0] and ext[0].endswith(f"-s 10.42.0.0/16 -j {SVC}")
    assert "--src-type LOCAL -j KUBE-MARK-MASQ" in ext[1] and ext[2].endswith(f"--src-type LOCAL -j {SVC}")
    assert ext[3] == f"-A {EXT} -j {SVL}"
    assert nat[SVL] == [f'-A {SVL} -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j {sep("10.180.0.2")}']
    assert len(nat[SVC]) == 3      # masquerade + both endpoints: internal traffic uses every endpoint
    assert t["filter"]["KUBE-NODEPORTS"] == [
        '-A KUBE-NODEPORTS -m comment --comment "ns1/svc1:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT']
    # no local endpoint: external traffic is dropped, not rejected; internal still served
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.1")})
    ext_filter = t["filter"]["KUBE-EXTERNAL-SERVICES"]
    assert all('"ns1/svc1:p80 has no local endpoints"' in r and r.endswith("-j DROP") for r in ext_filter)
    assert len(ext_filter) == 2     # the LB IP and the node port
    assert SVL not in t["nat"] and any(r.endswith(f"-j {SVC}") for r in t["nat"]["KUBE-SERVICES"])


def test_internal_traffic_policy_local():
    svc = ServicePort("172.30.0.41", 80, internal_policy_local=True)
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.1", "10.180.0.2", local=("10.180.0.1",))})
    assert t["nat"]["KUBE-SERVICES"][0].endswith(f"-j {SVL}")
    assert SVC not in t["nat"]
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.2")})
    assert '"ns1/svc1:p80 has no local endpoints"' in t["filter"]["KUBE-SERVICES"][0]
    assert t["filter"]["KUBE-SERVICES"][0].endswith("-j DROP")


def test_no_endpoints_rejects_every_address():
    svc = ServicePort("172.30.0.41", 80, node_port=3001, load_balancer_ips=("1.2.3.4",), external_ips=("192.168.99.11",))
    _, t, chains = render({SPN: svc}, {SPN: []})
    assert chains == set()
    f = t["filter"]
    assert f["KUBE-SERVICES"] == ['-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp '
                                  '-d 172.30.0.41/32 --dport 80 -j REJECT']
    assert len(f["KUBE-EXTERNAL-SERVICES"]) == 3
    assert any("--dst-type LOCAL" in r and "--dport 3001" in r for r in f["KUBE-EXTERNAL-SERVICES"])
    # not-ready endpoints count as none; terminating-but-serving ones are used when nothing is ready
    _, t, chains = render({SPN: svc}, {SPN: [Endpoint("10.180.0.1", 80, ready=False, serving=False)]})
    assert chains == set()
    _, t, chains = render({SPN: svc}, {SPN: [Endpoint("10.180.0.1", 80, ready=False, serving=True, terminating=True)]})
    assert sep("10.180.0.1") in chains


def test_load_balancer_source_ranges():
    svc = ServicePort("172.30.0.41", 80, load_balancer_ips=("1.2.3.4",), load_balancer_source_ranges=("203.0.113.0/25",))
    _, t, _ = render({SPN: svc}, {SPN: eps("10.180.0.1")})
    assert any(r.endswith(f"-j {FW}") and "-d 1.2.3.4/32" in r for r in t["nat"]["KUBE-SERVICES"])
    assert t["nat"][FW][0].endswith(f"-s 203.0.113.0/25 -j {EXT}")
    assert "will be dropped by KUBE-PROXY-FIREWALL" in t["nat"][FW][1]
    assert t["filter"]["KUBE-PROXY-FIREWALL"][0].endswith("-d 1.2.3.4/32 --dport 80 -j DROP")


def test_nodeport_addresses():
    node = NodeContext("node-1", ("10.44.0.2",), nodeport_addresses=("10.44.0.0/24",))
    _, t, _ = render({}, {}, node)
    assert t["nat"]["KUBE-SERVICES"] == [
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this '
        'chain" -d 10.44.0.0/24 -j KUBE-NODEPORTS']


def test_partial_render_writes_only_changed_chains_and_deletes_stale_ones():
    other = ServicePortName("ns1", "svc2", "", "TCP")
    p = Proxier(NODE)
    services = {SPN: ServicePort("172.30.0.41", 80), other: ServicePort("172.30.0.42", 80)}
    for spn in services:
        p._rules[spn] = service_rules(spn, services[spn], eps("10.180.0.1", "10.180.0.2"), NODE)
    _, p._live_chains = p._render(rewrite=None, existing={"nat": {}, "filter": {}})
    p._written_nat_top, p._written_filter = p._pending_top
    # an endpoint leaves SPN: only its chains are written; the top-level chains did not change
    p._rules[SPN] = service_rules(SPN, services[SPN], eps("10.180.0.1"), NODE)
    text, _ = p._render(rewrite={SPN}, existing=None)
    lines = text.splitlines()
    other_svc = service_chain(other, "tcp")
    assert f":{other_svc} - [0:0]" not in lines and not any(x.startswith(f"-A {other_svc}") for x in lines)
    assert f":{SVC} - [0:0]" in lines
    assert f"-X {sep('10.180.0.2')}" in lines and f":{sep('10.180.0.2')} - [0:0]" in lines
    assert "*filter" not in lines and ":KUBE-SERVICES - [0:0]" not in lines
    assert p.last_rule_counts["nat"] == 3 + 2 + 1 + (1 + 2) + 2 + (1 + 2) + 2 * 2
    # SPN loses every endpoint: its cluster IP rule moves to filter's REJECT, so both tables'
    # top-level chains are written in full (the unchanged service's rule too)
    p._live_chains = {c for r in p._rules.values() for c in r.chains}
    p._written_nat_top, p._written_filter = p._pending_top
    p._rules[SPN] = service_rules(SPN, services[SPN], [], NODE)
    lines = p._render(rewrite={SPN}, existing=None)[0].splitlines()
    assert ":KUBE-SERVICES - [0:0]" in lines and any(x.startswith("-A KUBE-SERVICES") and x.endswith(other_svc)
                                                     for x in lines)
    assert any("ns1/svc1:p80 has no endpoints" in x for x in lines)
    assert f"-X {SVC}" in lines and f"-X {sep('10.180.0.1')}" in lines


def test_leaks_count_only_what_services_add():
    _, t, _ = render({}, {})
    assert count_leaks_in(t, NODE) == {"chains": 0, "rules": 0}
    _, t, _ = render({SPN: ServicePort("172.30.0.41", 80)}, {SPN: eps("10.180.0.1")})
    assert count_leaks_in(t, NODE) == {"chains": 2, "rules": 1 + 2 + 2}


def test_iptables_restore_accepts_the_ruleset():
    svcs = {
        SPN: ServicePort("172.30.0.41", 80, node_port=3001, load_balancer_ips=("1.2.3.4",), external_ips=("192.168.99.11",),
                         session_affinity="ClientIP", external_policy_local=True, health_check_node_port=30000,
                         load_balancer_source_ranges=("203.0.113.0/25",)),
        ServicePortName("ns1", "dns", "dns", "UDP"): ServicePort("172.30.0.10", 53, "UDP", internal_policy_local=True),
        ServicePortName("ns1", "empty", "", "TCP"): ServicePort("172.30.0.11", 80, node_port=3002),
    }
    endpoints = {SPN: eps("10.180.0.1", "10.180.0.2", local=("10.180.0.1",)),
                 ServicePortName("ns1", "dns", "dns", "UDP"): [Endpoint("10.180.0.3", 53, is_local=True)]}
    text, _, _ = render(svcs, endpoints)
    ns = f"klproxyipt{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        res = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush", "--test"], input=text,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr + text
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
