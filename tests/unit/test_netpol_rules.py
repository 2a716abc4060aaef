"""The rules computed from pods, namespaces and NetworkPolicies (networking.k8s.io/v1 semantics),
and the nftables text they render to (checked by ``nft -c`` inside a private network namespace).

The data plane itself (bridge, br_netfilter, conntrack) is exercised in
tests/integration/test_netpol_dataplane.py and, in a cluster, tests/e2e/test_net_policy.py."""

from __future__ import annotations

import subprocess

import pytest

from kubeling.kubelet.network.policy_rules import (Allow, Peer, PortMatch, chain_name, compute_rules, pod_ips,
                                                   render_nft)

NODE = "node-a"


def pod(name, ip, *, ns="default", labels=None, node=NODE, ports=(), phase="Running", host_network=False,
        deleting=False):
    meta = {"name": name, "namespace": ns, "labels": labels or {}, "uid": f"uid-{ns}-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [dict(p) for p in ports]}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}] if ip else []}}


def ns(name, **labels):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def policy(name, spec, namespace="default"):
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"p-{name}", "resourceVersion": "1"},
            "spec": spec}


NAMESPACES = [ns("default"), ns("other", team="blue"), ns("third", team="red")]


def rules(pods, policies, namespaces=NAMESPACES):
    return compute_rules(NODE, pods, namespaces, policies)


def peers(*ips):
    return tuple(Peer(f"{ip}/32") for ip in sorted(ips))


# -- which pods are isolated, per policyTypes ----------------------------------------------------------

def test_no_policy_isolates_nothing():
    r = rules([pod("a", "10.42.0.2")], [])
    assert r.empty and not r.problems


def test_default_deny_ingress_selects_every_pod_of_its_namespace_on_this_node_only():
    pods = [pod("a", "10.42.0.2"), pod("b", "10.42.0.3", labels={"x": "y"}),
            pod("remote", "10.42.1.2", node="node-b"), pod("elsewhere", "10.42.0.4", ns="other")]
    r = rules(pods, [policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    assert sorted(r.ingress) == ["10.42.0.2", "10.42.0.3"]
    assert all(fw.allows == [] and fw.policies == ["default/deny"] for fw in r.ingress.values())
    assert r.egress == {}


def test_policy_types_default_ingress_always_egress_only_with_egress_rules():
    p = pod("a", "10.42.0.2")
    only_ingress = rules([p], [policy("p", {"podSelector": {}, "ingress": [{}]})])
    assert list(only_ingress.ingress) == ["10.42.0.2"] and only_ingress.egress == {}
    both = rules([p], [policy("p", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})])
    assert list(both.ingress) == ["10.42.0.2"] and both.ingress["10.42.0.2"].allows == []
    assert both.egress["10.42.0.2"].allows == [Allow("default/p", (Peer("10.0.0.0/8"),), None)]


def test_egress_only_policy_leaves_ingress_open():
    r = rules([pod("a", "10.42.0.2")], [policy("p", {"podSelector": {}, "policyTypes": ["Egress"]})])
    assert r.ingress == {} and r.egress["10.42.0.2"].allows == []


def test_pod_selector_and_expressions():
    pods = [pod("db", "10.42.0.2", labels={"role": "db", "tier": "x"}), pod("web", "10.42.0.3", labels={"role": "web"}),
            pod("none", "10.42.0.4")]
    r = rules(pods, [policy("p", {"podSelector": {"matchExpressions": [
        {"key": "role", "operator": "In", "values": ["db", "cache"]}, {"key": "tier", "operator": "Exists"}]}})])
    assert list(r.ingress) == ["10.42.0.2"]


def test_pods_without_ip_host_network_or_finished_are_not_policed():
    pods = [pod("pending", ""), pod("host", "10.44.0.2", host_network=True), pod("done", "10.42.0.5", phase="Succeeded"),
            pod("ok", "10.42.0.6")]
    r = rules(pods, [policy("deny", {"podSelector": {}})])
    assert list(r.ingress) == ["10.42.0.6"]
    assert pod_ips(pods[1]) == [] and pod_ips(pods[2]) == []


def test_ipv6_addresses_are_ignored():
    p = pod("a", "10.42.0.2")
    p["status"]["podIPs"] = [{"ip": "10.42.0.2"}, {"ip": "fd00::2"}]
    assert pod_ips(p) == ["10.42.0.2"]


def test_a_leaving_pod_yields_its_ip_to_its_replacement():
    old = pod("old", "10.42.0.2", labels={"v": "1"}, deleting=True)
    new = pod("new", "10.42.0.2", labels={"v": "2"})
    r = rules([old, new], [policy("p", {"podSelector": {}})])
    assert r.ingress["10.42.0.2"].name == "new"


# -- peers --------------------------------------------------------------------------------------------

PODS = [
    pod("server", "10.42.0.2", labels={"app": "server"}, ports=[{"name": "http", "containerPort": 8080}]),
    pod("client", "10.42.0.3", labels={"app": "client"}),
    pod("other-client", "10.42.1.3", labels={"app": "other"}, node="node-b"),
    pod("blue-client", "10.42.1.4", ns="other", labels={"app": "client"}, node="node-b"),
    pod("blue-db", "10.42.1.5", ns="other", labels={"app": "db"}, node="node-b"),
    pod("red-client", "10.42.2.4", ns="third", labels={"app": "client"}, node="node-c"),
]
SERVER = {"matchLabels": {"app": "server"}}


def ingress_from(*peers_, ports=None):
    rule = {"from": list(peers_)}
    if ports is not None:
        rule["ports"] = ports
    return rules(PODS, [policy("p", {"podSelector": SERVER, "ingress": [rule]})]).ingress["10.42.0.2"].allows


def test_pod_selector_peer_is_in_the_policys_namespace():
    assert ingress_from({"podSelector": {"matchLabels": {"app": "client"}}}) == [
        Allow("default/p", peers("10.42.0.3"), None)]


def test_namespace_selector_peer_is_every_pod_of_matching_namespaces():
    assert ingress_from({"namespaceSelector": {"matchLabels": {"team": "blue"}}}) == [
        Allow("default/p", peers("10.42.1.4", "10.42.1.5"), None)]


def test_namespace_and_pod_selector_together_are_anded():
    got = ingress_from({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                        "podSelector": {"matchLabels": {"app": "client"}}})
    assert got == [Allow("default/p", peers("10.42.1.4", "10.42.2.4"), None)]


def test_empty_namespace_selector_is_every_namespace_by_metadata_name_too():
    got = ingress_from({"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}})
    assert got[0].peers == peers("10.42.0.3", "10.42.1.4", "10.42.2.4")
    by_name = ingress_from({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "third"}}})
    assert by_name[0].peers == peers("10.42.2.4")


def test_separate_peers_are_ored():
    got = ingress_from({"podSelector": {"matchLabels": {"app": "client"}}},
                       {"namespaceSelector": {"matchLabels": {"team": "red"}}})
    assert got[0].peers == peers("10.42.0.3", "10.42.2.4")


def test_ip_block_with_except():
    got = ingress_from({"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}})
    assert got == [Allow("default/p", (Peer("172.17.0.0/16", ("172.17.1.0/24",)),), None)]


def test_empty_from_means_every_source_and_no_matching_peer_means_none():
    r = rules(PODS, [policy("p", {"podSelector": SERVER, "ingress": [{}]})])
    assert r.ingress["10.42.0.2"].allows == [Allow("default/p", None, None)]
    assert ingress_from({"podSelector": {"matchLabels": {"app": "nobody"}}}) == []


def test_rules_and_policies_are_ored():
    r = rules(PODS, [
        policy("a", {"podSelector": SERVER, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        policy("b", {"podSelector": {}, "ingress": [{"ports": [{"port": 9090}]},
                                                   {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]})])
    fw = r.ingress["10.42.0.2"]
    assert fw.policies == ["default/a", "default/b"]
    assert fw.allows == [Allow("default/a", peers("10.42.0.3"), None),
                         Allow("default/b", None, (PortMatch("tcp", 9090),)),
                         Allow("default/b", (Peer("192.0.2.0/24"),), None)]


# -- ports --------------------------------------------------------------------------------------------

CLIENT = {"podSelector": {"matchLabels": {"app": "client"}}}


def test_ports_protocols_numbers_and_end_port():
    got = ingress_from(CLIENT, ports=[{"port": 80}, {"protocol": "UDP", "port": 53}, {"protocol": "SCTP"},
                                      {"protocol": "TCP", "port": 8000, "endPort": 8100}])
    assert got[0].ports == (PortMatch("sctp"), PortMatch("tcp", 80), PortMatch("tcp", 8000, 8100),
                            PortMatch("udp", 53))


def test_named_port_resolves_against_the_destination_pod_for_ingress():
    assert ingress_from(CLIENT, ports=[{"port": "http"}])[0].ports == (PortMatch("tcp", 8080),)
    # the wrong protocol, or a name the pod does not have, matches nothing: the rule goes
    assert ingress_from(CLIENT, ports=[{"port": "http", "protocol": "UDP"}]) == []
    assert ingress_from(CLIENT, ports=[{"port": "nope"}, {"port": 81}])[0].ports == (PortMatch("tcp", 81),)


def test_named_port_resolves_against_each_destination_pod_for_egress():
    pods = [pod("client", "10.42.0.3", labels={"app": "client"}),
            pod("s1", "10.42.1.2", labels={"app": "s"}, node="node-b", ports=[{"name": "web", "containerPort": 80}]),
            pod("s2", "10.42.1.3", labels={"app": "s"}, node="node-b", ports=[{"name": "web", "containerPort": 8080}]),
            pod("s3", "10.42.1.4", labels={"app": "s"}, node="node-b")]
    to_s = {"podSelector": {"matchLabels": {"app": "s"}}}
    r = rules(pods, [policy("p", {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                  "egress": [{"to": [to_s, {"ipBlock": {"cidr": "192.0.2.0/24"}}],
                                              "ports": [{"port": "web"}]}]})])
    assert r.egress["10.42.0.3"].allows == [Allow("default/p", peers("10.42.1.2"), (PortMatch("tcp", 80),)),
                                            Allow("default/p", peers("10.42.1.3"), (PortMatch("tcp", 8080),))]
    # with no `to`, every pod of the cluster that names the port is a candidate
    r = rules(pods, [policy("p", {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                  "egress": [{"ports": [{"port": "web"}, {"port": 53, "protocol": "UDP"}]}]})])
    assert r.egress["10.42.0.3"].allows == [Allow("default/p", None, (PortMatch("udp", 53),)),
                                            Allow("default/p", peers("10.42.1.2"), (PortMatch("tcp", 80),)),
                                            Allow("default/p", peers("10.42.1.3"), (PortMatch("tcp", 8080),))]


# -- bad objects --------------------------------------------------------------------------------------

def test_bad_peers_match_nothing_and_are_reported_and_the_rest_still_works():
    r = rules(PODS, [
        policy("bad", {"podSelector": SERVER, "ingress": [{"from": [
            {"ipBlock": {"cidr": "not-a-cidr"}},
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Bogus"}]}},
            {"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        policy("badsel", {"podSelector": {"matchExpressions": [{"key": "x", "operator": "Nope"}]}})])
    assert r.ingress["10.42.0.2"].allows == [Allow("default/bad", peers("10.42.0.3"), None)]
    assert sorted(p.reason for p in r.problems) == ["InvalidIPBlock", "InvalidSelector", "InvalidSelector"]


# -- rendering ----------------------------------------------------------------------------------------

def chain_body(text: str, name: str) -> str:
    body = text[text.index(f"chain {name} {{"):]
    return body[:body.index("\n  }\n")]


def test_render_merges_overlapping_addresses_and_ports_and_ends_in_reject():
    r = rules(PODS, [policy("p", {"podSelector": SERVER, "ingress": [{
        "from": [CLIENT, {"ipBlock": {"cidr": "10.42.0.0/24"}}, {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.8/29"]}}],
        "ports": [{"port": 80}, {"port": 79, "endPort": 85}, {"port": 90}, {"protocol": "UDP"}]}]})])
    text = render_nft(r, node_name=NODE)
    chain = chain_name("ingress", r.ingress["10.42.0.2"])
    pod_chain = chain_body(text, chain)
    assert "ip saddr 10.42.0.2 accept" in pod_chain                       # the pod itself
    allow = pod_chain.split("goto ")[1].strip()
    body = chain_body(text, allow)
    assert 'ip saddr 10.42.0.0/24 tcp dport { 79-85, 90 } accept comment "default/p"' in body
    assert 'ip saddr 10.42.0.0/24 meta l4proto udp accept comment "default/p"' in body
    assert 'ip saddr 192.0.2.0/24 ip saddr != { 192.0.2.8/29 } tcp dport { 79-85, 90 } accept' in body
    assert body.strip().endswith("reject with icmp type admin-prohibited")
    assert f"10.42.0.2 : jump {chain}" in text
    assert "egress-pods" not in text


def test_render_shares_allow_chains_and_large_address_sets():
    many = [pod(f"c{i}", f"10.42.3.{i * 2 + 2}", labels={"app": "client"}, node="node-b") for i in range(20)]
    local = [pod(f"s{i}", f"10.42.0.{i + 10}", labels={"app": "server"}) for i in range(5)]
    spec = {"podSelector": SERVER, "ingress": [{"from": [CLIENT]}]}
    r = rules(many + local, [policy("p", spec), policy("q", {**spec, "ingress": [{"from": [CLIENT], "ports": [{"port": 1}]}]})])
    text = render_nft(r, node_name=NODE)
    assert len(r.ingress) == 5
    assert text.count("chain allow-ingress-") == 1                 # five pods, one list of allows
    assert text.count("goto allow-ingress-") == 5
    assert text.count("set addrs-") == 1                           # twenty clients, one set, used twice
    name = text.split("set ")[1].split(" ")[0]
    assert text.count(f"ip saddr @{name} ") == 2
    assert "10.42.3.2, 10.42.3.4" in text


def nft_check(text: str) -> subprocess.CompletedProcess:
    """``nft -c`` (parse and validate in the kernel, commit nothing) inside a fresh network namespace."""
    return subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)


@pytest.mark.parametrize("spec", [
    pytest.param({"podSelector": {}}, id="deny-all"),
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, id="deny-all-both"),
    pytest.param({"podSelector": SERVER, "policyTypes": ["Ingress", "Egress"],
                  "ingress": [{"from": [CLIENT, {"namespaceSelector": {}}], "ports": [{"port": "http"}]}],
                  "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.0.0.0/8"]}}],
                              "ports": [{"protocol": "SCTP", "port": 9}, {"protocol": "UDP", "port": 53, "endPort": 60}]},
                             {}]}, id="everything"),
])
def test_rendered_ruleset_is_accepted_by_nft(spec):
    r = rules(PODS, [policy("p", spec)])
    assert not r.empty
    done = nft_check(render_nft(r, node_name=NODE))
    assert done.returncode == 0, done.stderr
