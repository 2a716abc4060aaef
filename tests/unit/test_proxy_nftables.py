"""The nftables proxy mode's rules: the text generated per service port (ClusterIP, NodePort,
LoadBalancer, affinity, Local policies, no endpoints), checked by the real ``nft -c``, and the
Proxier's full and partial syncs applied to a real kernel table. Everything that runs ``nft``
does so inside a network namespace this test creates (never the test's own) and deletes.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kubeling.proxy import nftables as nft  # noqa: E402
from kubeling.proxy.types import Endpoint, NodeContext, ServicePort, ServicePortName  # noqa: E402
from tests.support.netlab import ProxyProcess  # noqa: E402

NODE = NodeContext("node-1", ("10.44.9.2",))
WEB = ServicePortName("default", "web", "", "TCP")
NP = ServicePortName("default", "np", "http", "TCP")
DNS = ServicePortName("kube-system", "kube-dns", "dns", "UDP")


def eps(n=3, local=(0,), **kw):
    return [Endpoint(f"10.42.0.{10 + i}", 8080, node_name="node-1" if i in local else "node-2",
                     is_local=i in local, **kw) for i in range(n)]


def chain_of(rules: nft.ServiceRules, prefix: str) -> tuple[str, list[str]]:
    found = [(k, v) for k, v in rules.chains.items() if k.startswith(prefix)]
    assert len(found) == 1, (prefix, list(rules.chains))
    return found[0]


# -- names -------------------------------------------------------------------------------------

def test_chain_names_follow_upstream():
    base = nft.service_chain_base(WEB, "tcp")
    assert re.fullmatch(r"[A-Z2-7]{8}-default/web/tcp/", base), base
    assert nft.service_chain_base(NP, "tcp").endswith("-default/np/tcp/http")
    ep = nft.endpoint_chain_base(NP, "tcp", Endpoint("10.42.0.10", 8080))
    assert ep.endswith("-default/np/tcp/http__10.42.0.10/8080")
    assert nft.endpoint_chain_base(NP, "tcp", Endpoint("fd00::1", 80)).endswith("__fd00..1/80")
    # one digit apart: visibly different hashes
    a = nft.endpoint_chain_base(WEB, "tcp", Endpoint("10.42.0.10", 80))
    b = nft.endpoint_chain_base(WEB, "tcp", Endpoint("10.42.0.11", 80))
    assert a[:8] != b[:8]
    long = nft.hash_and_truncate("x" * 400)
    assert len(long) == nft.CHAIN_BASE_LENGTH_MAX and long.endswith("...")


# -- rules per service port --------------------------------------------------------------------

def test_cluster_ip_balances_over_every_ready_endpoint():
    r = nft.service_rules(WEB, ServicePort("10.43.0.20", 80), eps(3) + [Endpoint("10.42.0.99", 8080, ready=False)], NODE)
    name, rules = chain_of(r, "service-")
    assert r.elements[(nft.SERVICE_IPS, "10.43.0.20 . tcp . 80")] == f"goto {name}"
    assert r.elements[(nft.CLUSTER_IPS, "10.43.0.20")] == ""
    assert rules[0] == "ip daddr 10.43.0.20 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
    endpoint_chains = {k: v for k, v in r.chains.items() if k.startswith("endpoint-")}
    assert len(endpoint_chains) == 3                     # the unready one is not used
    picks = [re.sub(r" endpoint-\S+", " EP", x) for x in rules[1:]]
    assert picks == ["numgen random mod 3 == 0 goto EP", "numgen random mod 2 == 0 goto EP", "goto EP"]
    assert sorted(x.split()[-1] for x in rules[1:]) == sorted(endpoint_chains)
    for k, v in endpoint_chains.items():
        ip = k.split("__")[1].split("/")[0]
        assert v == [f"ip saddr {ip} jump mark-for-masquerade", f"meta l4proto tcp dnat to {ip}:8080"]
    assert not r.sets and not any(k[0] in (nft.NO_ENDPOINT_SERVICES, nft.SERVICE_NODEPORTS) for k in r.elements)


def test_large_services_balance_with_upstreams_vmap():
    """Up to BALANCE_RULES_MAX endpoints a cascade of numgen rules picks one (no set per
    service, see the module); above, upstream's ``numgen random mod N vmap { … }``."""
    n = nft.BALANCE_RULES_MAX + 1
    many = [Endpoint(f"10.42.1.{i + 1}", 8080) for i in range(n)]
    _, rules = chain_of(nft.service_rules(WEB, ServicePort("10.43.0.20", 80), many, NODE), "service-")
    assert rules[-1].startswith(f"numgen random mod {n} vmap {{ 0 : goto endpoint-") and rules[-1].count("goto") == n
    _, rules = chain_of(nft.service_rules(WEB, ServicePort("10.43.0.20", 80), many[:-1], NODE), "service-")
    assert len(rules) == 1 + n - 1 and rules[1].startswith(f"numgen random mod {n - 1} == 0 goto")


def test_cascade_picks_uniformly():
    """The cascade's probabilities: endpoint i is taken with 1/(n-i) of what reaches it."""
    for n in range(1, nft.BALANCE_RULES_MAX + 1):
        _, rules = chain_of(nft.service_rules(WEB, ServicePort("10.43.0.20", 80),
                                              [Endpoint(f"10.42.1.{i + 1}", 8080) for i in range(n)], NODE), "service-")
        left, shares = 1.0, []
        for x in rules[1:]:
            m = re.match(r"numgen random mod (\d+) == 0 goto ", x)
            p = 1 / int(m.group(1)) if m else 1.0
            shares.append(left * p)
            left -= left * p
        assert left == pytest.approx(0) and shares == pytest.approx([1 / n] * n), (n, rules)


def test_masquerade_all_and_udp():
    node = NodeContext("node-1", ("10.44.9.2",), masquerade_all=True)
    r = nft.service_rules(DNS, ServicePort("10.43.0.10", 53, protocol="UDP"), eps(2), node)
    name, rules = chain_of(r, "service-")
    assert "/udp/dns" in name
    assert rules[0] == "ip daddr 10.43.0.10 udp dport 53 jump mark-for-masquerade"
    assert (nft.SERVICE_IPS, "10.43.0.10 . udp . 53") in r.elements
    assert any("meta l4proto udp dnat to 10.42.0.10:8080" in v for v in r.chains.values())


def test_terminating_endpoints_serve_when_none_is_ready():
    term = [Endpoint("10.42.0.10", 8080, ready=False, serving=True, terminating=True),
            Endpoint("10.42.0.11", 8080, ready=False, serving=False, terminating=True)]
    r = nft.service_rules(WEB, ServicePort("10.43.0.20", 80), term, NODE)
    _, rules = chain_of(r, "service-")
    assert rules[-1].startswith("goto endpoint-") and "10.42.0.10" in rules[-1]


def test_nodeport_and_external_ips_go_through_the_external_chain():
    svc = ServicePort("10.43.0.21", 80, node_port=30080, external_ips=("10.45.0.5", "fd00::5"))
    r = nft.service_rules(NP, svc, eps(2), NODE)
    ext, ext_rules = chain_of(r, "external-")
    cluster, _ = chain_of(r, "service-")
    assert r.elements[(nft.SERVICE_NODEPORTS, "tcp . 30080")] == f"goto {ext}"
    assert r.elements[(nft.SERVICE_IPS, "10.45.0.5 . tcp . 80")] == f"goto {ext}"
    assert not any("fd00" in k[1] for k in r.elements)      # the ip table holds IPv4 only
    assert ext_rules == ["jump mark-for-masquerade", f"goto {cluster}"]


def test_load_balancer_with_source_ranges_has_a_firewall():
    svc = ServicePort("10.43.0.22", 80, node_port=30081, load_balancer_ips=("10.45.0.100",),
                      load_balancer_source_ranges=("10.44.9.0/24", "192.0.2.0/24"))
    r = nft.service_rules(WEB, svc, eps(2), NODE)
    ext, _ = chain_of(r, "external-")
    fw, fw_rules = chain_of(r, "firewall-")
    assert r.elements[(nft.SERVICE_IPS, "10.45.0.100 . tcp . 80")] == f"goto {ext}"
    assert r.elements[(nft.FIREWALL_IPS, "10.45.0.100 . tcp . 80")] == f"goto {fw}"
    # the node is inside a range: its own traffic to the VIP (sourced from the VIP) is allowed
    assert fw_rules == ["ip saddr != { 10.44.9.0/24, 192.0.2.0/24, 10.45.0.100 } drop"]
    r = nft.service_rules(WEB, ServicePort("10.43.0.22", 80, load_balancer_ips=("10.45.0.100",)), eps(2), NODE)
    assert not any(k.startswith("firewall-") for k in r.chains)
    assert not any(k[0] == nft.FIREWALL_IPS for k in r.elements)


def test_client_ip_affinity_sets_and_checks_before_balancing():
    svc = ServicePort("10.43.0.23", 80, session_affinity="ClientIP", sticky_max_age_seconds=60)
    r = nft.service_rules(WEB, svc, eps(3), NODE)
    assert len(r.sets) == 3 and set(r.sets.values()) == {60}
    _, rules = chain_of(r, "service-")
    checks = [x for x in rules if x.startswith("ip saddr @affinity-")]
    assert len(checks) == 3 and rules.index(checks[-1]) < len(rules) - 1
    assert rules[-3].startswith("numgen random mod 3 == 0 goto endpoint-") and rules[-1].startswith("goto endpoint-")
    for set_name in r.sets:
        ep_chain = "endpoint-" + set_name[len("affinity-"):]
        assert f"ip saddr @{set_name} goto {ep_chain}" in rules
        assert f"update @{set_name} {{ ip saddr }}" in r.chains[ep_chain]


def test_external_traffic_policy_local():
    svc = ServicePort("10.43.0.24", 80, node_port=30082, external_policy_local=True)
    r = nft.service_rules(WEB, svc, eps(3, local=(1,)), NODE)
    ext, ext_rules = chain_of(r, "external-")
    cluster, cluster_rules = chain_of(r, "service-")
    local, local_rules = chain_of(r, "local-")
    assert ext_rules == [
        f'ip saddr 10.42.0.0/16 goto {cluster} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto {cluster} comment "short-circuit local traffic"',
        f"goto {local}"]
    assert "mod 3" in cluster_rules[-3]
    local_ep = "endpoint-" + nft.endpoint_chain_base(WEB, "tcp", Endpoint("10.42.0.11", 8080))
    assert local_rules == [f"goto {local_ep}"]
    # no local endpoint: external traffic is dropped, except what short-circuits
    r = nft.service_rules(WEB, svc, eps(3, local=()), NODE)
    _, ext_rules = chain_of(r, "external-")
    assert not any(x.startswith("goto local-") for x in ext_rules)
    assert r.elements[(nft.NO_ENDPOINT_NODEPORTS, "tcp . 30082")] == "drop"
    assert r.elements[(nft.SERVICE_NODEPORTS, "tcp . 30082")].startswith("goto external-")


def test_internal_traffic_policy_local():
    svc = ServicePort("10.43.0.25", 80, internal_policy_local=True)
    r = nft.service_rules(WEB, svc, eps(3, local=(2,)), NODE)
    local, rules = chain_of(r, "local-")
    assert r.elements[(nft.SERVICE_IPS, "10.43.0.25 . tcp . 80")] == f"goto {local}"
    assert not any(k.startswith("service-") for k in r.chains)
    assert rules[-1].startswith("goto endpoint-") and "10.42.0.12" in rules[-1]
    r = nft.service_rules(WEB, svc, eps(3, local=()), NODE)
    assert r.elements[(nft.NO_ENDPOINT_SERVICES, "10.43.0.25 . tcp . 80")] == "drop"
    assert not r.chains and (nft.SERVICE_IPS, "10.43.0.25 . tcp . 80") not in r.elements


def test_no_endpoints_reject():
    svc = ServicePort("10.43.0.27", 80, node_port=30084, external_ips=("10.45.0.6",))
    r = nft.service_rules(WEB, svc, [Endpoint("10.42.0.10", 8080, ready=False, serving=False)], NODE)
    assert not r.chains and not r.sets
    assert r.elements == {
        (nft.CLUSTER_IPS, "10.43.0.27"): "",
        (nft.NO_ENDPOINT_SERVICES, "10.43.0.27 . tcp . 80"): "goto reject-chain",
        (nft.NO_ENDPOINT_SERVICES, "10.45.0.6 . tcp . 80"): "goto reject-chain",
        (nft.NO_ENDPOINT_NODEPORTS, "tcp . 30084"): "goto reject-chain",
    }


def test_bad_addresses_never_reach_the_transaction():
    with pytest.raises(ValueError):
        nft.service_rules(WEB, ServicePort("fd00::20", 80), eps(1), NODE)
    r = nft.service_rules(WEB, ServicePort("10.43.0.20", 80), [Endpoint("fd00::1", 80), Endpoint("nope", 80)]
                          + eps(1), NODE)
    assert chain_of(r, "service-")[1][1:] == ["goto endpoint-" + nft.endpoint_chain_base(WEB, "tcp", eps(1)[0])]


def test_skeleton_matches_upstream_layout():
    text = "\n".join(nft.skeleton(NODE))
    for chain, hook, prio in (("filter-input", "input", "-110"), ("filter-output-post-dnat", "output", "-90"),
                              ("nat-prerouting", "prerouting", "-100"), ("nat-postrouting", "postrouting", "100")):
        assert re.search(rf"add chain ip kube-proxy {chain} {{ type \w+ hook {hook} priority {prio} ; }}", text)
    assert "add rule ip kube-proxy nat-prerouting jump services" in text
    assert "add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check" in text
    assert "add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check" in text
    assert "add rule ip kube-proxy masquerading masquerade fully-random" in text
    assert "mark set mark or 0x4000" in text
    assert "add element ip kube-proxy nodeport-ips { 10.44.9.2 }" in text
    assert "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports" in text
    every = nft.skeleton(NodeContext("n", ("10.44.9.2",), nodeport_addresses=("0.0.0.0/0",)))
    assert any("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports" in x
               for x in every)
    assert nft.nodeport_addresses(NodeContext("n", ("10.44.9.2", "192.0.2.1"), nodeport_addresses=("192.0.2.0/24",))) \
        == ["192.0.2.1"]
    assert nft.nodeport_addresses(NodeContext("n", ())) is None       # no address known: every local one


# -- against the kernel (in a namespace of our own) ---------------------------------------------

@pytest.fixture(scope="module")
def netns():
    name = f"nftu{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def nft_in(ns: str, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *argv], input=input, capture_output=True, text=True)


def all_kinds() -> tuple[dict, dict]:
    S = ServicePortName
    services = {
        WEB: ServicePort("10.43.0.20", 80),
        NP: ServicePort("10.43.0.21", 80, node_port=30080, external_ips=("10.45.0.5",)),
        S("default", "lb"): ServicePort("10.43.0.22", 80, node_port=30081, load_balancer_ips=("10.45.0.100",),
                                        load_balancer_source_ranges=("10.44.9.0/24",)),
        S("default", "aff"): ServicePort("10.43.0.23", 80, session_affinity="ClientIP", sticky_max_age_seconds=60),
        S("default", "etp"): ServicePort("10.43.0.24", 80, node_port=30082, external_policy_local=True),
        S("default", "itp"): ServicePort("10.43.0.25", 80, internal_policy_local=True),
        S("default", "both"): ServicePort("10.43.0.26", 80, node_port=30083, internal_policy_local=True,
                                          external_policy_local=True),
        S("default", "none"): ServicePort("10.43.0.27", 80, node_port=30084),
        S("default", "sctp", "s", "SCTP"): ServicePort("10.43.0.28", 9, protocol="SCTP"),
        DNS: ServicePort("10.43.0.10", 53, protocol="UDP"),
        S("default", "headless"): ServicePort("", 80),
    }
    endpoints = {k: eps(3, local=(1,)) for k in services if k.name != "none"}
    return services, endpoints


def test_nft_accepts_the_whole_ruleset(netns):
    services, endpoints = all_kinds()
    text = nft.ruleset_text(NODE, services, endpoints)
    r = nft_in(netns, "-c", "-f", "-", input=text)
    assert r.returncode == 0, r.stderr
    every = NodeContext("n", ("10.44.9.2",), nodeport_addresses=("0.0.0.0/0",), masquerade_all=True)
    r = nft_in(netns, "-c", "-f", "-", input=nft.ruleset_text(every, services, endpoints))
    assert r.returncode == 0, r.stderr


def normalized(ns: str) -> dict:
    """The table as comparable data: chains -> their rules (no handles), sets/maps -> elements."""
    r = nft_in(ns, "-j", "list", "table", "ip", "kube-proxy")
    if r.returncode != 0:
        return {}
    out: dict = {}
    for item in json.loads(r.stdout)["nftables"]:
        if "chain" in item:
            c = item["chain"]
            out.setdefault(("chain", c["name"]), []).insert(0, json.dumps({k: c.get(k) for k in ("type", "hook", "prio")}))
        elif "rule" in item:
            out.setdefault(("chain", item["rule"]["chain"]), []).append(json.dumps(item["rule"]["expr"], sort_keys=True))
        elif "set" in item or "map" in item:
            s = item.get("set") or item.get("map")
            out[("set", s["name"])] = [s.get("timeout")] + sorted(json.dumps(e, sort_keys=True) for e in s.get("elem", ()))
    return out


@pytest.fixture
def proxier(netns):
    with ProxyProcess(types.SimpleNamespace(node=netns), "nftables") as p:
        try:
            yield p
        finally:
            assert p.cleanup() == {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
            assert nft_in(netns, "list", "table", "ip", "kube-proxy").returncode != 0   # gone


def test_partial_syncs_end_where_a_full_sync_would(netns, proxier):
    """A random walk of changes applied by partial syncs leaves exactly the table a full sync
    of the final state builds."""
    rng = random.Random(8)
    services, endpoints = all_kinds()
    proxier.sync(services, endpoints)
    names = list(services)
    for step in range(25):
        spn = rng.choice(names)
        kind = rng.randrange(5)
        svc = services.get(spn) or ServicePort(f"10.43.1.{step}", 80)
        if kind == 0:          # endpoints change
            endpoints[spn] = [Endpoint(f"10.42.0.{rng.randrange(10, 40)}", 8080, is_local=rng.random() < 0.5)
                              for _ in range(rng.randrange(0, 4))]
        elif kind == 1:        # service removed
            services.pop(spn, None)
            endpoints.pop(spn, None)
        elif kind == 2:        # affinity toggled / timeout changed
            services[spn] = ServicePort(svc.cluster_ip or "10.43.2.1", svc.port, svc.protocol, svc.node_port,
                                        session_affinity=rng.choice(["None", "ClientIP"]),
                                        sticky_max_age_seconds=rng.choice([30, 60]))
        elif kind == 3:        # policies toggled
            services[spn] = ServicePort(svc.cluster_ip or "10.43.2.2", svc.port, svc.protocol,
                                        node_port=svc.node_port or 31000 + step, external_ips=svc.external_ips,
                                        external_policy_local=rng.random() < 0.5,
                                        internal_policy_local=rng.random() < 0.5)
        else:                  # back, as new
            services[spn] = ServicePort(f"10.43.3.{step}", 8080, spn.protocol)
            endpoints[spn] = eps(rng.randrange(1, 4))
        proxier.sync(services, endpoints, changed={spn})
    partial = normalized(netns)
    # chains a partial sync stopped using are flushed at once and deleted later (see
    # UNUSED_CHAINS_MAX): empty, and nothing refers to them
    empty = {k[1] for k, v in partial.items() if k[0] == "chain" and len(v) == 1}
    listing = nft_in(netns, "list", "table", "ip", "kube-proxy").stdout
    assert not any(f"goto {c}" in listing or f"jump {c}" in listing for c in empty)
    proxier.cleanup()
    proxier.sync(services, endpoints)
    full = normalized(netns)
    assert full == {k: v for k, v in partial.items() if k[0] != "chain" or k[1] not in empty}
    assert not any(k[0] == "chain" and len(v) == 1 for k, v in full.items())


def test_full_sync_removes_what_a_previous_run_left(netns, proxier):
    services, endpoints = all_kinds()
    proxier.sync(services, endpoints)
    before = proxier.count_leaks()
    assert before["chains"] > 10 and before["sets"] == 3 and before["elements"] > 10
    # a new proxier (a restarted kube-proxy) with fewer services: its first full sync deletes the rest
    with ProxyProcess(types.SimpleNamespace(node=netns), "nftables") as second:
        second.sync({WEB: services[WEB]}, {WEB: endpoints[WEB]})
        assert second.count_leaks() == {"chains": 4, "rules": 3 * 2 + 1 + 3, "sets": 0, "elements": 2}
        second.sync({}, {}, changed={WEB})
        assert second.count_leaks() == {"chains": 0, "rules": 0, "sets": 0, "elements": 0}


def test_a_failed_sync_raises_and_the_next_one_is_full(netns, proxier):
    services, endpoints = all_kinds()
    proxier.sync(services, endpoints)
    good = normalized(netns)
    # someone deletes the table behind the proxy's back: the partial sync that follows fails
    # (its chains are gone) and says why; the runner's retry is a full sync, which rebuilds all
    assert nft_in(netns, "delete", "table", "ip", "kube-proxy").returncode == 0
    endpoints[WEB] = eps(2)
    with pytest.raises(RuntimeError, match="nft -f failed"):
        proxier.sync(services, endpoints, changed={WEB})
    proxier.sync(services, endpoints, changed=set())      # changed ignored after a failure
    rebuilt = normalized(netns)
    assert rebuilt != good and set(rebuilt) - set(good) == set() and len(rebuilt) == len(good) - 1


def test_one_bad_service_is_left_out_not_the_others(netns, proxier):
    services, endpoints = all_kinds()
    bad = ServicePortName("default", "web", "bad name;", "TCP")
    proxier.sync({**services, bad: ServicePort("10.43.9.9", 80)}, {**endpoints, bad: eps(1)})
    assert proxier.count_leaks()["elements"] > 10
    out = nft_in(netns, "list", "map", "ip", "kube-proxy", "service-ips").stdout
    assert "10.43.0.20 . tcp . 80" in out and "10.43.9.9" not in out


def test_libnftables_runs_in_process(netns):
    """The proxier applies its transactions through libnftables (no fork+exec per sync) when
    the library is there, as with Debian's nftables; ``KUBELING_NFT_EXEC=1`` forces ``nft``."""
    code = ("import asyncio; from kubeling.proxy import nftables as n; assert n._libnftables() is not None; "
            "asyncio.run(n.run_nft('add table ip kube-proxy-libtest\\n')); "
            "print(asyncio.run(n._nft_json('list', 'tables')))")
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert "kube-proxy-libtest" in r.stdout
    assert nft_in(netns, "delete", "table", "ip", "kube-proxy-libtest").returncode == 0


def test_periodic_resync_repairs_the_kernel_and_rewrites_only_what_differs(netns, proxier):
    """The resync after a good sync (``changed=None``) rewrites the skeleton and the maps, the
    service ports whose rules changed and those whose chains or sets the kernel lost, and
    deletes chains and sets nobody wants; it ends where a complete sync would."""
    services, endpoints = all_kinds()
    proxier.sync(services, endpoints)
    good = normalized(netns)
    web_chains = [k[1] for k in good if k[0] == "chain" and "default/web/tcp/" in k[1]]
    service_chain = next(c for c in web_chains if c.startswith("service-"))
    endpoint_chain = next(c for c in web_chains if c.startswith("endpoint-"))
    tamper = "\n".join([
        f"flush chain ip kube-proxy {service_chain}", f"delete chain ip kube-proxy {endpoint_chain}",
        "delete element ip kube-proxy service-ips { 10.43.0.10 . udp . 53 }",
        "add chain ip kube-proxy service-AAAAAAAA-default/stray/tcp/",
        "add rule ip kube-proxy service-AAAAAAAA-default/stray/tcp/ counter",
        "add set ip kube-proxy affinity-AAAAAAAA-default/stray/tcp/__10.42.0.1/80 { type ipv4_addr ; }",
        "add rule ip kube-proxy services counter"]) + "\n"
    r = nft_in(netns, "-f", "-", input=tamper)
    assert r.returncode == 0, r.stderr
    assert normalized(netns) != good
    proxier.sync(services, endpoints)
    assert normalized(netns) == good
    # a change the resync finds on its own (no partial sync named it)
    endpoints[WEB] = eps(2)
    proxier.sync(services, endpoints)
    resynced = normalized(netns)
    proxier.cleanup()
    proxier.sync(services, endpoints)
    assert normalized(netns) == resynced != good


def test_periodic_resync_writes_only_the_changed_service(netns):
    code = textwrap.dedent("""
        import asyncio, sys
        sys.path.insert(0, "tests/unit")
        import test_proxy_nftables as t
        from kubeling.proxy import nftables as n
        async def main():
            services, endpoints = t.all_kinds()
            p = n.Proxier(t.NODE)
            await p.start()
            try:
                await p.sync(services, endpoints)
                first = p.last_sync
                await p.sync(services, endpoints)
                same = p.last_sync
                endpoints[t.WEB] = t.eps(2)
                await p.sync(services, endpoints)
                print(first["complete"], first["rewritten"], same["complete"], same["rewritten"], p.last_sync["rewritten"])
                # unused chains wait for a deleting transaction, but never more than UNUSED_CHAINS_MAX
                n.UNUSED_CHAINS_MAX = 3
                waiting = []
                for i in range(4):
                    endpoints[t.WEB] = [n.Endpoint(f"10.42.7.{i}", 80)]
                    await p.sync(services, endpoints, changed={t.WEB})
                    waiting.append(p.last_sync["unused_chains"])
                print(*waiting)
            finally:
                await p.cleanup()
        asyncio.run(main())
    """)
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "10", "False", "0", "1", "2", "0", "1", "2"]


def test_unused_chains_are_deleted_by_a_later_transaction(netns, proxier):
    """An endpoint change flushes the old endpoint chain and leaves it for a transaction that
    has to make nft read the kernel anyway (a deleted map element), or the next resync."""
    services, endpoints = all_kinds()
    proxier.sync(services, endpoints)
    chains = lambda: {k[1]: len(v) - 1 for k, v in normalized(netns).items() if k[0] == "chain"}  # noqa: E731
    first = chains()
    endpoints[WEB] = eps(2)          # 10.42.0.12 goes
    proxier.sync(services, endpoints, changed={WEB})
    gone = "endpoint-" + nft.endpoint_chain_base(WEB, "tcp", eps(3)[2])
    after = chains()
    assert after[gone] == 0 and set(after) == set(first)
    assert proxier.count_leaks()["chains"] == sum(1 for c in first if c not in nft.SKELETON_CHAINS)
    # the endpoint comes back: its chain is used again, never deleted
    endpoints[WEB] = eps(3)
    proxier.sync(services, endpoints, changed={WEB})
    assert chains() == first
    endpoints[WEB] = eps(2)
    proxier.sync(services, endpoints, changed={WEB})
    # a service goes: its map elements are deleted, and the unused chain with them
    del services[DNS]
    proxier.sync(services, endpoints, changed={DNS})
    after = chains()
    assert gone not in after and not any("/dns/udp/" in c or "kube-dns/udp" in c for c in after)
    assert not any(n == 0 for n in after.values())
    # and the periodic resync deletes what waits
    endpoints[WEB] = eps(1)
    proxier.sync(services, endpoints, changed={WEB})
    assert 0 in chains().values()
    proxier.sync(services, endpoints)
    assert 0 not in chains().values()
