"""The nftables proxy mode (``kubeling proxy --proxy-mode nftables``), as upstream's
``pkg/proxy/nftables``: one table ``ip kube-proxy``, verdict maps for constant-time service
lookup, and one ``nft -f -`` transaction per sync.

The table::

    base chains      filter-prerouting/-input/-forward/-output (priority -110, before DNAT),
                     filter-output-post-dnat (-90), nat-prerouting/-output (dstnat),
                     nat-postrouting (srcnat)
    services         ip daddr . meta l4proto . th dport vmap @service-ips
                     <node ip> meta l4proto . th dport vmap @service-nodeports
    service-ips      map ClusterIP/externalIP/LB IP . proto . port -> goto service-/external- chain
    service-nodeports map proto . nodePort -> goto external- chain
    no-endpoint-services / no-endpoint-nodeports   the same keys -> goto reject-chain | drop,
                     checked for new connections in filter-input/-forward/-output
    cluster-ips      set of every ClusterIP; cluster-ips-check rejects other ports of a ClusterIP
                     and drops unallocated addresses of the service CIDR
    firewall-ips     map LB IP . proto . port -> goto firewall- chain (loadBalancerSourceRanges)
    mark-for-masquerade / masquerading   mark 0x4000, masquerade fully-random in srcnat

Per service port ``ns/name:port`` (``HASH-ns/name/proto/port`` with HASH the first 8 base32
characters of its sha256, as upstream):

- ``service-…`` (Cluster policy) / ``local-…`` (Local policy): masquerade off-cluster sources of
  the ClusterIP, then ClientIP affinity checks (``ip saddr @affinity-… goto endpoint-…``), then
  a uniform random pick of an endpoint: up to BALANCE_RULES_MAX (16) endpoints with the rules
  ``numgen random mod N == 0 goto endpoint-…``, ``numgen random mod N-1 == 0 goto …``, …,
  ``goto endpoint-…`` (the last); above, upstream's ``numgen random mod N vmap { 0 : goto
  endpoint-…, … }``. Not upstream: each such vmap is an anonymous set, and the kernel's cost of
  adding one grows with the sets already in the table (5,000 services took 8-19 s to load, their
  resync 30-50 s); the rule cascade is the same choice with no set (1.6 s);
- ``external-…`` for NodePort, externalIPs and LB IPs: masquerade (Cluster), or under
  externalTrafficPolicy Local short-circuit pod and node traffic to the Cluster chain;
- ``endpoint-…__IP/PORT``: hairpin masquerade, ``update @affinity-…`` (a dynamic set with the
  affinity timeout), ``dnat to IP:PORT``;
- ``firewall-…``: drop sources outside loadBalancerSourceRanges.

Syncs, each one transaction: the first sync and the one after a failure rewrite the skeleton
and every chain, refill the maps and delete chains and sets the kernel has but nobody wants (a
previous run's). The periodic resync (``changed=None`` after a good sync) reads the kernel's
chain and set names too, rewrites the skeleton and refills the maps, deletes the strays, but
rewrites only the service ports whose rules differ from the ones it last wrote or whose chains
or sets are missing (0.4 s at 5,000 services instead of a 2 s rewrite that would hold back the
partial syncs behind it; as the iptables mode, and unlike upstream, a chain whose rules were
edited behind its back is not noticed). A partial sync rewrites only the changed ports' chains
and adds/deletes only the map elements that changed (upstream's partial sync), so its cost
follows the change, not the number of services. Chains are written as ``add chain NAME { rule ;
… }`` and elements added through their map's declaration (``elements = { … }``): nft parses
those without first dumping every chain of the kernel (``add rule``, ``add element`` and any
``delete`` make it do so: ~30 ms at 5,000 services). So that an endpoint change needs no
``delete``, a partial sync flushes the chains it stopped using (an empty chain nothing jumps to
changes no packet) and deletes them in the next transaction that deletes anyway, once
UNUSED_CHAINS_MAX wait, or at the resync; ``count_leaks`` counts them meanwhile. What is left
(~35 ms at 5,000 services) is mostly the kernel re-validating the jump graph at commit.
Affinity sets are never flushed by a sync: their clients stay stuck.

``cleanup()`` (module function, blocking) deletes the table; ``kubeling node cleanup`` calls it
through `kubeling.proxy.cleanup`.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kubeling.proxy.types import (
    Endpoint,
    EndpointsMap,
    NodeContext,
    ProxyModeUnavailable,
    ServicePort,
    ServicePortMap,
    ServicePortName,
    categorize_endpoints,
)

log = logging.getLogger("kubeling.proxy.nftables")

FAMILY = "ip"
TABLE = "kube-proxy"
T = f"{FAMILY} {TABLE}"
MASQUERADE_MARK = "0x4000"
NAME_LENGTH_MAX = 256
CHAIN_PREFIX_LENGTH_MAX = 16
CHAIN_BASE_LENGTH_MAX = NAME_LENGTH_MAX - CHAIN_PREFIX_LENGTH_MAX

# base chains: name, type, hook, priority (dstnat = -100, srcnat = 100; nft 1.0.6 takes the
# names only on some hooks). Filter chains at dstnat-10 see pre-DNAT addresses.
BASE_CHAINS = (
    ("filter-prerouting", "filter", "prerouting", "-110"),
    ("filter-input", "filter", "input", "-110"),
    ("filter-forward", "filter", "forward", "-110"),
    ("filter-output", "filter", "output", "-110"),
    ("filter-output-post-dnat", "filter", "output", "-90"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
)
# (chain jumped to, from base chain, match)
JUMP_CHAINS = (
    ("nodeport-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-forward", "ct state new"),
    ("service-endpoints-check", "filter-output", "ct state new"),
    ("firewall-check", "filter-prerouting", "ct state new"),
    ("firewall-check", "filter-output", "ct state new"),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new"),
    ("cluster-ips-check", "filter-output-post-dnat", "ct state new"),
)
# Not upstream: our nodes carry `unreachable` routes for the service CIDR (so a VIP without a
# rule fails on the node), and routing answers those before the forward hook: a connection from
# a pod to a ClusterIP without endpoints would get a rate-limited "no route to host" instead of
# the REJECT. Checking ClusterIPs in prerouting too (reject there needs Linux >= 5.9; `start`
# tries) gives the immediate "connection refused" upstream gives. Only the service CIDR: a
# ClusterIP's entry (reject, or drop under internalTrafficPolicy Local) means no DNAT happens,
# so pre-DNAT is the same verdict; an external IP's "drop" must not stop pod traffic that its
# external chain short-circuits.
PREROUTING_REJECT = ("service-endpoints-check", "filter-prerouting", "ct state new ip daddr {service_cidr}")
# Endpoint balancing: upstream's ``numgen random mod N vmap { 0 : goto endpoint-…, … }`` makes
# one anonymous set per service chain, and the kernel's cost of adding an anonymous set grows
# with the number of sets in the table (its name, ``__mapN``, is allocated by scanning them):
# 5,000 services took 8-30 s to load, and a full resync that replaces every set 30-50 s. Up to
# this many endpoints, a service chain picks with a cascade of ``numgen random mod (N-i) == 0
# goto endpoint-…`` rules and a last ``goto`` instead: the same uniform choice, no set (5,000
# services load in ~1.5 s). Larger services keep upstream's vmap (constant time per new
# connection, and few enough sets not to matter).
BALANCE_RULES_MAX = 16
# A partial sync flushes the chains it no longer needs but deletes them only when its transaction
# deletes something anyway (a map element, a set), when this many wait, or at the next full
# sync: nft reads every chain and set of the kernel before any ``delete`` (~30 ms of the ~70 ms
# an endpoint change costs at 5,000 services). An empty chain nothing jumps to changes no packet.
UNUSED_CHAINS_MAX = 256
SERVICE_IPS, SERVICE_NODEPORTS = "service-ips", "service-nodeports"
NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS = "no-endpoint-services", "no-endpoint-nodeports"
FIREWALL_IPS, CLUSTER_IPS, NODEPORT_IPS = "firewall-ips", "cluster-ips", "nodeport-ips"
REJECT_CHAIN, MARK_MASQ_CHAIN = "reject-chain", "mark-for-masquerade"
ADDR_KEY = "ipv4_addr . inet_proto . inet_service : verdict"
PORT_KEY = "inet_proto . inet_service : verdict"
# maps and sets of the skeleton: name -> (kind, type, comment)
SKELETON_MAPS = {
    NO_ENDPOINT_SERVICES: ("map", ADDR_KEY, "vmap to drop or reject packets to services with no endpoints"),
    NO_ENDPOINT_NODEPORTS: ("map", PORT_KEY, "vmap to drop or reject packets to service nodeports with no endpoints"),
    FIREWALL_IPS: ("map", ADDR_KEY, "destinations that are subject to LoadBalancerSourceRanges"),
    SERVICE_IPS: ("map", ADDR_KEY, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    SERVICE_NODEPORTS: ("map", PORT_KEY, "NodePort traffic"),
    CLUSTER_IPS: ("set", "ipv4_addr", "Active ClusterIPs"),
}
SKELETON_CHAINS = frozenset(
    [c[0] for c in BASE_CHAINS] + [j[0] for j in JUMP_CHAINS]
    + ["services", "cluster-ips-check", "masquerading", MARK_MASQ_CHAIN, REJECT_CHAIN])
SKELETON_SETS = frozenset(list(SKELETON_MAPS) + [NODEPORT_IPS])


# -- names -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)
def hash_and_truncate(name: str) -> str:
    """``HASH-name``: HASH is 8 base32 characters of the name's sha256 (unique and visually
    distinct even when names differ in one digit); cut to fit a chain name."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()[:5]).decode()   # 5 bytes: 8 characters
    name = f"{digest}-{name}"
    if len(name) > CHAIN_BASE_LENGTH_MAX:
        name = name[:CHAIN_BASE_LENGTH_MAX - 3] + "..."
    return name


def service_chain_base(spn: ServicePortName, protocol: str) -> str:
    """``HASH-namespace/name/proto/port`` ('/' cannot occur in the API names, so it separates)."""
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{protocol}/{spn.port}")


def endpoint_chain_base(spn: ServicePortName, protocol: str, ep: Endpoint) -> str:
    """``HASH-namespace/name/proto/port__IP/PORT`` (':' of an IPv6 address becomes '.')."""
    ip = ep.ip.replace(":", ".")
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{protocol}/{spn.port}__{ip}/{ep.port}")


# -- per-service rules -------------------------------------------------------------------------

@dataclass
class ServiceRules:
    """What one service port puts in the table."""

    chains: dict[str, list[str]] = field(default_factory=dict)       # chain -> its rules, in order
    sets: dict[str, int] = field(default_factory=dict)               # affinity set -> timeout (s)
    elements: dict[tuple[str, str], str] = field(default_factory=dict)  # (map/set, key) -> verdict ("" in a set)


def _pick(eps: Sequence[Endpoint]) -> list[Endpoint]:
    ready = [e for e in eps if e.ready]
    return ready or [e for e in eps if e.serving and e.terminating]


def service_rules(spn: ServicePortName, svc: ServicePort, endpoints: Sequence[Endpoint],
                  node: NodeContext) -> ServiceRules:
    """The chains, affinity sets and map elements of one service port (upstream's
    ``syncProxyRules`` loop body)."""
    out = ServiceRules()
    # this table is IPv4: other families' addresses (and anything unparsable) are left out, so
    # that one odd service can never fail the whole transaction
    if not _v4(svc.cluster_ip):
        raise ValueError(f"cluster IP {svc.cluster_ip!r} is not an IPv4 address")
    if svc.protocol not in ("TCP", "UDP", "SCTP") or not 0 < svc.port < 65536:
        raise ValueError(f"unsupported port {svc.protocol}/{svc.port}")
    if not (_NAME.fullmatch(spn.namespace) and _NAME.fullmatch(spn.name) and _PORT_NAME.fullmatch(spn.port)):
        raise ValueError("the names are not DNS labels")
    if svc.affinity and not 0 < svc.sticky_max_age_seconds <= 86400:
        svc = dataclasses.replace(svc, sticky_max_age_seconds=10800)
    svc = dataclasses.replace(
        svc, external_ips=tuple(ip for ip in svc.external_ips if _v4(ip)),
        load_balancer_ips=tuple(ip for ip in svc.load_balancer_ips if _v4(ip)),
        load_balancer_source_ranges=tuple(c for c in svc.load_balancer_source_ranges if _v4_net(c)),
        node_port=svc.node_port if 0 < svc.node_port < 65536 else 0)
    endpoints = [e for e in endpoints if _v4(e.ip) and 0 < e.port < 65536]
    proto = svc.protocol.lower()
    base = service_chain_base(spn, proto)
    cluster_chain, local_chain = f"service-{base}", f"local-{base}"
    external_chain, firewall_chain = f"external-{base}", f"firewall-{base}"
    cat = categorize_endpoints(endpoints, svc)
    cluster_eps = cat.cluster
    if not cluster_eps and svc.externally_accessible and svc.external_policy_local:
        # upstream's UsesClusterEndpoints is true for any externally accessible port: under
        # externalTrafficPolicy Local, pod and node traffic short-circuits to the Cluster chain
        cluster_eps = _pick(endpoints)
    reachable = {str(e): e for e in [*cat.cluster, *cat.local, *cluster_eps]}
    # any usable (ready, or serving and terminating) endpoint anywhere: upstream's
    # hasAnyEndpoints. None: REJECT; some, but none for a Local policy: DROP.
    has_endpoints = bool(_pick(endpoints))
    port = str(svc.port)
    elems = out.elements

    def add_chain(name: str) -> list[str]:
        return out.chains.setdefault(name, [])

    ep_chain = {k: f"endpoint-{endpoint_chain_base(spn, proto, e)}" for k, e in reachable.items()}
    ep_set = {k: f"affinity-{endpoint_chain_base(spn, proto, e)}" for k, e in reachable.items()}
    for k in reachable:
        add_chain(ep_chain[k])
        if svc.affinity:
            out.sets[ep_set[k]] = svc.sticky_max_age_seconds

    uses_cluster_chain = bool(cluster_eps)
    uses_local_chain = bool(cat.local) and svc.uses_local_endpoints
    if uses_cluster_chain:
        add_chain(cluster_chain)
    if uses_local_chain:
        add_chain(local_chain)

    internal_chain, has_internal = cluster_chain, has_endpoints
    if svc.internal_policy_local:
        internal_chain, has_internal = local_chain, has_endpoints and bool(cat.local)
    external_policy_chain, has_external = cluster_chain, has_endpoints
    if svc.external_policy_local:
        external_policy_chain, has_external = local_chain, has_endpoints and bool(cat.local)
    uses_external_chain = has_endpoints and svc.externally_accessible
    if uses_external_chain:
        add_chain(external_chain)

    if not has_endpoints:
        internal_verdict = external_verdict = f"goto {REJECT_CHAIN}"
    else:
        internal_verdict = "" if has_internal else "drop"
        external_verdict = "" if has_external else "drop"

    # the ClusterIP
    if svc.cluster_ip:
        elems[(CLUSTER_IPS, svc.cluster_ip)] = ""
        key = f"{svc.cluster_ip} . {proto} . {port}"
        if has_internal:
            elems[(SERVICE_IPS, key)] = f"goto {internal_chain}"
        else:
            elems[(NO_ENDPOINT_SERVICES, key)] = internal_verdict
    # externalIPs and load balancer IPs
    for ip in svc.external_ips:
        key = f"{ip} . {proto} . {port}"
        if has_endpoints:
            elems[(SERVICE_IPS, key)] = f"goto {external_chain}"
        if not has_external:
            elems[(NO_ENDPOINT_SERVICES, key)] = external_verdict
    uses_firewall = bool(svc.load_balancer_ips and svc.load_balancer_source_ranges)
    if uses_firewall:
        sources = list(svc.load_balancer_source_ranges)
        if any(_contains(cidr, ip) for cidr in sources for ip in node.node_ips):
            # a node reaching its own VIP comes back with the VIP as its source
            sources += list(svc.load_balancer_ips)
        add_chain(firewall_chain).append(f"ip saddr != {{ {', '.join(sources)} }} drop")
    for ip in svc.load_balancer_ips:
        key = f"{ip} . {proto} . {port}"
        if has_endpoints:
            elems[(SERVICE_IPS, key)] = f"goto {external_chain}"
        if uses_firewall:
            elems[(FIREWALL_IPS, key)] = f"goto {firewall_chain}"
        if not has_external:
            elems[(NO_ENDPOINT_SERVICES, key)] = external_verdict
    # the NodePort (not subject to loadBalancerSourceRanges, as upstream)
    if svc.node_port:
        key = f"{proto} . {svc.node_port}"
        if has_endpoints:
            elems[(SERVICE_NODEPORTS, key)] = f"goto {external_chain}"
        if not has_external:
            elems[(NO_ENDPOINT_NODEPORTS, key)] = external_verdict

    # internal traffic: masquerade what comes from outside the cluster (it may leave the node)
    if has_internal and svc.cluster_ip:
        match = f"ip daddr {svc.cluster_ip} {proto} dport {port}"
        if node.masquerade_all:
            out.chains[internal_chain].append(f"{match} jump {MARK_MASQ_CHAIN}")
        elif node.cluster_cidr:
            out.chains[internal_chain].append(f"{match} ip saddr != {node.cluster_cidr} jump {MARK_MASQ_CHAIN}")
    # external traffic
    if uses_external_chain:
        rules = out.chains[external_chain]
        if not svc.external_policy_local:
            rules.append(f"jump {MARK_MASQ_CHAIN}")
        else:
            if node.cluster_cidr:
                rules.append(f'ip saddr {node.cluster_cidr} goto {cluster_chain} comment "short-circuit pod traffic"')
            rules.append(f'fib saddr type local jump {MARK_MASQ_CHAIN} comment "masquerade local traffic"')
            rules.append(f'fib saddr type local goto {cluster_chain} comment "short-circuit local traffic"')
        if has_external:
            rules.append(f"goto {external_policy_chain}")

    def balance(chain: str, eps: list[Endpoint]) -> None:
        rules = out.chains[chain]
        if svc.affinity:
            for e in eps:
                rules.append(f"ip saddr @{ep_set[str(e)]} goto {ep_chain[str(e)]}")
        if len(eps) > BALANCE_RULES_MAX:          # upstream's rule: one anonymous vmap
            vmap = ", ".join(f"{i} : goto {ep_chain[str(e)]}" for i, e in enumerate(eps))
            rules.append(f"numgen random mod {len(eps)} vmap {{ {vmap} }}")
            return
        # the same uniform choice without a set: endpoint i of n is taken with probability
        # 1/(n-i) once the ones before it were not (as iptables' statistic cascade), the last
        # one always
        for i, e in enumerate(eps[:-1]):
            rules.append(f"numgen random mod {len(eps) - i} == 0 goto {ep_chain[str(e)]}")
        rules.append(f"goto {ep_chain[str(eps[-1])]}")

    if uses_cluster_chain:
        balance(cluster_chain, cluster_eps)
    if uses_local_chain:
        balance(local_chain, cat.local)
    for k, e in reachable.items():
        rules = out.chains[ep_chain[k]]
        rules.append(f"ip saddr {e.ip} jump {MARK_MASQ_CHAIN}")       # hairpin
        if svc.affinity:
            rules.append(f"update @{ep_set[k]} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {e}")
    return out


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9-]*")


@functools.lru_cache(maxsize=1 << 16)
def _v4(ip: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    except ValueError:
        return False


def _v4_net(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).version == 4
    except ValueError:
        return False


def _contains(cidr: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# -- the transaction text ----------------------------------------------------------------------

def skeleton(node: NodeContext, *, recreate_base_chains: bool = False,
             reject_in_prerouting: bool = True) -> list[str]:
    """The table's fixed part: base chains, jumps, helper chains, maps and sets (emptied)."""
    lines = [f'add table {T} {{ comment "rules for kube-proxy" ; }}']
    if recreate_base_chains:     # so that a changed hook or priority applies
        for name, *_ in BASE_CHAINS:
            lines += [f"add chain {T} {name}", f"delete chain {T} {name}"]
    for name, typ, hook, prio in BASE_CHAINS:
        lines += [f"add chain {T} {name} {{ type {typ} hook {hook} priority {prio} ; }}", f"flush chain {T} {name}"]
    made: set[str] = set()
    jumps = JUMP_CHAINS
    if reject_in_prerouting and node.service_cidr:
        dst, src, match = PREROUTING_REJECT
        jumps += ((dst, src, match.format(service_cidr=node.service_cidr)),)
    for dst, src, match in jumps:
        if dst not in made:
            made.add(dst)
            lines += [f"add chain {T} {dst}", f"flush chain {T} {dst}"]
        lines.append(f"add rule {T} {src} {match + ' ' if match else ''}jump {dst}")
    for name in ("services", "cluster-ips-check", "masquerading", MARK_MASQ_CHAIN, REJECT_CHAIN):
        if name not in made:
            lines += [f"add chain {T} {name}", f"flush chain {T} {name}"]
    lines += [
        f"add rule {T} {MARK_MASQ_CHAIN} mark set mark or {MASQUERADE_MARK}",
        f"add rule {T} masquerading mark and {MASQUERADE_MARK} == 0 return",
        f"add rule {T} masquerading mark set mark xor {MASQUERADE_MARK}",
        f"add rule {T} masquerading masquerade fully-random",
        f"add rule {T} {REJECT_CHAIN} reject",
    ]
    for name, (kind, typ, comment) in SKELETON_MAPS.items():
        lines += [f'add {kind} {T} {name} {{ type {typ} ; comment "{comment}" ; }}', f"flush {kind} {T} {name}"]
    lines += [
        f'add rule {T} cluster-ips-check ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"',
    ]
    if node.service_cidr:
        lines.append(f'add rule {T} cluster-ips-check ip daddr {{ {node.service_cidr} }} drop '
                     f'comment "Drop traffic to unallocated ClusterIPs"')
    lines.append(f'add set {T} {NODEPORT_IPS} {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}')
    nodeport_ips = nodeport_addresses(node)
    if nodeport_ips is None:      # every local address
        lines.append(f"delete set {T} {NODEPORT_IPS}")
        lines.append(f"add rule {T} nodeport-endpoints-check ip daddr != 127.0.0.0/8 "
                     f"meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")
    else:
        lines.append(f"flush set {T} {NODEPORT_IPS}")
        if nodeport_ips:
            lines.append(f"add element {T} {NODEPORT_IPS} {{ {', '.join(nodeport_ips)} }}")
        lines.append(f"add rule {T} nodeport-endpoints-check ip daddr @{NODEPORT_IPS} "
                     f"meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")
    lines += [
        f"add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
        f"add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}",
        f"add rule {T} services ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
    ]
    if nodeport_ips is None:
        lines.append(f"add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 "
                     f"meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    else:
        lines.append(f"add rule {T} services ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    return lines


def nodeport_addresses(node: NodeContext) -> list[str] | None:
    """The node IPs NodePorts answer on; None when every local address does (a 0.0.0.0/0 in
    ``nodeport_addresses``, or no node IP known). Without ``nodeport_addresses``, the node's
    IPs (upstream's nftables default, "primary")."""
    v4 = [ip for ip in node.node_ips if ":" not in ip and not ip.startswith("127.")]
    if not node.nodeport_addresses:
        return v4 or None          # a node without an address of its own: every local address
    nets = []
    for cidr in node.nodeport_addresses:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            log.warning("nodeport address %r is not a CIDR; ignored", cidr)
            continue
        if net.version == 4 and net.prefixlen == 0:
            return None
        nets.append(net)
    return [ip for ip in v4 if any(ipaddress.ip_address(ip) in n for n in nets)]


def _elements_lines(verb: str, by_map: dict[str, list[tuple[str, str]]]) -> list[str]:
    """``delete element …``; additions as the map's declaration with ``elements = { … }``,
    which nft parses without reading the kernel's chains and sets first (``add element``,
    as ``add rule`` and any ``delete``, makes it dump every chain: ~30 ms at 5,000 services)."""
    lines = []
    for name, items in by_map.items():
        if not items:
            continue
        if verb == "delete" or name == CLUSTER_IPS:
            body = ", ".join(k for k, _ in items)
        else:
            body = ", ".join(f"{k} : {v}" for k, v in items)
        if verb == "add" and name in SKELETON_MAPS:
            kind, typ, comment = SKELETON_MAPS[name]
            lines.append(f'add {kind} {T} {name} {{ type {typ} ; comment "{comment}" ; elements = {{ {body} }} ; }}')
        else:
            lines.append(f"{verb} element {T} {name} {{ {body} }}")
    return lines


def _chain_block(name: str, rules: Sequence[str]) -> str:
    """A chain's rules as ``add chain NAME { rule ; … }`` (no cache read, see `_elements_lines`)."""
    return f"add chain {T} {name} {{ {' ; '.join(rules)} ; }}" if rules else f"add chain {T} {name}"


def _set_line(name: str, timeout: int) -> str:
    return f"add set {T} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"


# -- running nft -------------------------------------------------------------------------------

class NftError(RuntimeError):
    pass


class _LibNftables:
    """libnftables in this process: the same parser and one transaction per buffer as ``nft -f``,
    without a fork and exec per sync (~10-20 ms here). One context, used under a lock."""

    OUTPUT_JSON, OUTPUT_TERSE = 1 << 4, 1 << 8       # NFT_CTX_OUTPUT_JSON, NFT_CTX_OUTPUT_TERSE

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)
        self.lock = threading.Lock()

    def run(self, text: str, *, check: bool = False, output_flags: int = 0) -> tuple[int, str, str]:
        with self.lock:
            self.lib.nft_ctx_set_dry_run(self.ctx, check)
            self.lib.nft_ctx_output_set_flags(self.ctx, output_flags)
            rc = self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode())
            out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode()
            return rc, out, err


_lib: list = []                 # [] not tried yet; [None] unavailable; [_LibNftables]


def _libnftables() -> _LibNftables | None:
    if not _lib:
        try:
            _lib.append(None if os.environ.get("KUBELING_NFT_EXEC") else _LibNftables())
        except (OSError, AttributeError) as e:
            log.info("nftables: libnftables unavailable (%s); running the nft command", e)
            _lib.append(None)
    return _lib[0]


async def run_nft(text: str, *args: str) -> str:
    """Apply ``text`` as one transaction (``nft -f -``; ``-c`` in ``args`` only checks it)."""
    lib = _libnftables()
    if lib is not None:
        rc, out, err = await asyncio.to_thread(lib.run, text, check="-c" in args)
    else:
        proc = await asyncio.create_subprocess_exec(
            "nft", *args, "-f", "-", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        raw_out, raw_err = await proc.communicate(text.encode())
        rc, out, err = proc.returncode, raw_out.decode(), raw_err.decode()
    if rc != 0:
        raise NftError(f"nft -f failed ({rc}): {_explain(err, text)}")
    return out


async def _nft_json(*argv: str) -> dict | None:
    """``nft -j ARGV`` (``-t`` first for terse), parsed; None when the table does not exist."""
    lib = _libnftables()
    if lib is not None:
        terse = argv[:1] == ("-t",)
        cmd = " ".join(argv[1:] if terse else argv)
        flags = lib.OUTPUT_JSON | (lib.OUTPUT_TERSE if terse else 0)
        rc, out, err = await asyncio.to_thread(lib.run, cmd, output_flags=flags)
    else:
        proc = await asyncio.create_subprocess_exec(
            "nft", "-j", *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        raw_out, raw_err = await proc.communicate()
        rc, out, err = proc.returncode, raw_out.decode(), raw_err.decode()
    if rc != 0:
        if "No such file" in err:
            return None
        raise NftError(f"nft -j {' '.join(argv)}: {err.strip()}")
    return json.loads(out or "{}")


def _explain(err: str, text: str) -> str:
    """nft's message, with the offending input line when it names one."""
    err = err.strip()
    m = re.search(r"(?:/dev/stdin|<cmdline>):(\d+):", err)
    if m:
        lines = text.splitlines()
        n = int(m.group(1))
        if 0 < n <= len(lines):
            return f"{err[:2000]} [line {n}: {lines[n - 1][:300]}]"
    return err[:2000]


def cleanup() -> None:
    """Delete the table (``kube-proxy --cleanup``). Blocking, idempotent; nothing to do
    without ``nft``."""
    if not shutil.which("nft"):
        return
    for family in ("ip", "ip6"):
        r = subprocess.run(["nft", "delete", "table", family, TABLE], capture_output=True, text=True)
        if r.returncode != 0 and "No such file" not in r.stderr:
            log.warning("nftables cleanup of %s %s: %s", family, TABLE, r.stderr.strip())


# -- the proxier -------------------------------------------------------------------------------

class Proxier:
    """The nftables mode (see the module docstring)."""

    mode = "nftables"

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._rules: dict[ServicePortName, ServiceRules] = {}
        self._owners: dict[tuple[str, str], dict[ServicePortName, str]] = {}   # element -> wanted by
        self._applied: dict[tuple[str, str], str] = {}                       # element -> in the kernel
        # service port -> (its ServicePort, its endpoints, the ServiceRules built from them)
        self._memo: dict[ServicePortName, tuple[ServicePort, tuple[Endpoint, ...], ServiceRules]] = {}
        self._unused: set[str] = set()        # chains flushed by a partial sync, not yet deleted
        self._deleting: set[str] = set()      # those the running transaction deletes
        self._need_full = True
        self._base_chains_recreated = False
        self.reject_in_prerouting = True
        self.last_sync: dict = {}

    def _skeleton(self, recreate: bool, reject_in_prerouting: bool) -> list[str]:
        return skeleton(self.node, recreate_base_chains=recreate, reject_in_prerouting=reject_in_prerouting)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not shutil.which("nft"):
            raise ProxyModeUnavailable("nftables mode needs the nft command (Debian package nftables); "
                                       "use --proxy-mode=iptables or userspace")
        for reject_in_prerouting in (True, False):
            text = "\n".join(self._skeleton(True, reject_in_prerouting)) + "\n"
            try:
                await run_nft(text, "-c")
                break
            except (NftError, OSError) as e:
                if not reject_in_prerouting:
                    raise ProxyModeUnavailable(f"nftables mode cannot program this kernel: {e}") from e
                log.info("nftables: no reject in prerouting on this kernel (%s)", e)
        self.reject_in_prerouting = reject_in_prerouting
        await run_nft(text)
        self._base_chains_recreated = True
        self._need_full = True

    async def cleanup(self) -> None:
        await asyncio.to_thread(cleanup)
        self._rules.clear()
        self._owners.clear()
        self._applied.clear()
        self._unused, self._deleting = set(), set()
        self._need_full = True

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, services: ServicePortMap, endpoints: EndpointsMap,
                   changed: set[ServicePortName] | None = None) -> None:
        full = changed is None or self._need_full
        complete = self._need_full
        self._need_full = True            # until this sync succeeds
        if full:
            text, stats = await self._full(services, endpoints, complete=complete)
        else:
            text, stats = self._partial(services, endpoints, changed)
        if text:
            await run_nft(text)
        self._unused -= self._deleting
        self._deleting = set()
        self._need_full = False
        self.last_sync = stats

    def _wanted(self, spn: ServicePortName, services: ServicePortMap, endpoints: EndpointsMap) -> ServiceRules | None:
        svc = services.get(spn)
        if svc is None or not _v4(svc.cluster_ip):     # headless, ExternalName, IPv6 (an ip6 table: later)
            self._memo.pop(spn, None)
            return None
        eps = tuple(endpoints.get(spn, ()))
        memo = self._memo.get(spn)
        if memo is not None and memo[0] == svc and memo[1] == eps:
            return memo[2]            # the same inputs: the same rules (a resync recomputes 5,000 in ~0.4 s)
        self._memo.pop(spn, None)
        try:
            rules = service_rules(spn, svc, eps, self.node)
            self._memo[spn] = (svc, eps, rules)
            return rules
        except ValueError as e:
            log.warning("nftables: %s is not proxied: %s", spn, e)
            return None
        except Exception:  # noqa: BLE001 - one bad service must not stop the others
            log.exception("nftables: cannot build the rules of %s; skipped", spn)
            return None

    def _own(self, spn: ServicePortName, rules: ServiceRules | None, old: ServiceRules | None,
             touched: set[tuple[str, str]]) -> None:
        if old is not None:
            for key in old.elements:
                owners = self._owners.get(key)
                if owners is not None:
                    owners.pop(spn, None)
                    if not owners:
                        del self._owners[key]
                touched.add(key)
        if rules is not None:
            for key, value in rules.elements.items():
                self._owners.setdefault(key, {})[spn] = value
                touched.add(key)

    def _effective(self, key: tuple[str, str]) -> str | None:
        owners = self._owners.get(key)
        if not owners:
            return None
        if len(owners) > 1:
            first = min(owners)
            log.warning("nftables: %s %s is claimed by %s; %s wins", key[0], key[1],
                        ", ".join(map(str, sorted(owners))), first)
            return owners[first]
        return next(iter(owners.values()))

    def _chain_lines(self, rules: ServiceRules, old: ServiceRules | None, lines: list[str]) -> None:
        """Rewrite one service port's chains and sets: flush what it had, (re)make what it has."""
        old_chains = old.chains if old else {}
        for name in old_chains:
            lines.append(f"flush chain {T} {name}")
        for name in rules.chains:
            if name not in old_chains:
                lines += [f"add chain {T} {name}", f"flush chain {T} {name}"]
        old_sets = old.sets if old else {}
        for name, timeout in rules.sets.items():
            if name in old_sets and old_sets[name] != timeout:
                lines.append(f"delete set {T} {name}")
            lines.append(_set_line(name, timeout))
        for name, chain_rules in rules.chains.items():
            lines.append(_chain_block(name, chain_rules))

    async def _full(self, services: ServicePortMap, endpoints: EndpointsMap, *,
                    complete: bool = True) -> tuple[str, dict]:
        """The skeleton, every map element, and the chains and sets of every service port
        (``complete``), or of those whose rules differ from the ones last written or whose chains
        or sets the kernel lacks (the periodic resync after a good sync); kernel chains and sets
        nobody wants are deleted either way."""
        # what the kernel has (a previous run's chains and sets too); listing chains and terse
        # sets is cheap, a whole table with its rules and elements is not (seconds at 5,000)
        have_chains: set[str] = set()
        have_sets: dict[str, int | None] = {}
        chains, sets = await asyncio.gather(_nft_json("list", "chains", FAMILY), _nft_json("-t", "list", "sets", FAMILY))
        for item in (chains or {}).get("nftables", []):
            if "chain" in item and item["chain"]["table"] == TABLE:
                have_chains.add(item["chain"]["name"])
        for item in (sets or {}).get("nftables", []):
            if "set" in item and item["set"]["table"] == TABLE:
                have_sets[item["set"]["name"]] = item["set"].get("timeout")
        written = {} if complete else self._rules
        self._unused, self._deleting = set(), set()    # flushed chains nobody wants: stale below
        unused = self._unused
        self._rules = {}
        self._owners.clear()
        self._applied.clear()
        for spn in services:
            rules = self._wanted(spn, services, endpoints)
            if rules is not None:
                self._rules[spn] = rules
                self._own(spn, rules, None, set())

        lines = self._skeleton(not self._base_chains_recreated, self.reject_in_prerouting)
        self._base_chains_recreated = True
        want_chains = {c for r in self._rules.values() for c in r.chains}
        want_sets = {s: t for r in self._rules.values() for s, t in r.sets.items()}
        stale_chains = sorted(have_chains - want_chains - SKELETON_CHAINS)
        stale_sets = sorted(set(have_sets) - set(want_sets) - SKELETON_SETS)
        lines += [f"flush chain {T} {c}" for c in stale_chains]
        rewritten = 0
        for spn, rules in self._rules.items():
            if (written.get(spn) == rules and all(c in have_chains and c not in unused for c in rules.chains)
                    and all(have_sets.get(s, 0) in (None, t) for s, t in rules.sets.items())):
                continue          # as written last time, and still in the kernel
            rewritten += 1
            for name in rules.chains:
                lines += [f"add chain {T} {name}", f"flush chain {T} {name}"]
            for name, timeout in rules.sets.items():
                if name in have_sets and have_sets[name] not in (None, timeout):
                    lines.append(f"delete set {T} {name}")
                lines.append(_set_line(name, timeout))
            for name, chain_rules in rules.chains.items():
                lines.append(_chain_block(name, chain_rules))
        adds: dict[str, list[tuple[str, str]]] = {}
        for key in self._owners:
            value = self._effective(key)
            self._applied[key] = value
            adds.setdefault(key[0], []).append((key[1], value))
        lines += _elements_lines("add", adds)
        lines += [f"delete chain {T} {c}" for c in stale_chains]
        lines += [f"delete set {T} {s}" for s in stale_sets]
        stats = {"full": True, "complete": complete, "services": len(self._rules), "rewritten": rewritten,
                 "lines": len(lines), "stale_chains": len(stale_chains)}
        return "\n".join(lines) + "\n", stats

    def _partial(self, services: ServicePortMap, endpoints: EndpointsMap,
                 changed: set[ServicePortName]) -> tuple[str, dict]:
        todo = set(changed) | (services.keys() - self._rules.keys())
        todo |= {spn for spn in self._rules if spn not in services}
        touched: set[tuple[str, str]] = set()
        chain_lines: list[str] = []
        stale_chains: list[str] = []
        stale_sets: list[str] = []
        rewritten = 0
        for spn in sorted(todo):
            old = self._rules.get(spn)
            rules = self._wanted(spn, services, endpoints)
            if rules == old:
                continue
            rewritten += 1
            self._own(spn, rules, old, touched)
            if rules is not None:
                self._chain_lines(rules, old, chain_lines)
                self._rules[spn] = rules
                self._unused.difference_update(rules.chains)
            else:
                self._rules.pop(spn, None)
                chain_lines += [f"flush chain {T} {c}" for c in (old.chains if old else {})]
            if old is not None:
                now = rules.chains if rules else {}
                stale_chains += [c for c in old.chains if c not in now]
                now_sets = rules.sets if rules else {}
                stale_sets += [s for s in old.sets if s not in now_sets]
        deletes: dict[str, list[tuple[str, str]]] = {}
        adds: dict[str, list[tuple[str, str]]] = {}
        for key in sorted(touched):
            before, after = self._applied.get(key), self._effective(key)
            if before == after:
                continue
            if before is not None:
                deletes.setdefault(key[0], []).append((key[1], before))
                del self._applied[key]
            if after is not None:
                adds.setdefault(key[0], []).append((key[1], after))
                self._applied[key] = after
        lines = _elements_lines("delete", deletes) + chain_lines + _elements_lines("add", adds)
        lines += [f"delete set {T} {s}" for s in stale_sets]
        self._unused.update(stale_chains)
        if self._unused and (any(x.startswith("delete ") for x in lines) or len(self._unused) >= UNUSED_CHAINS_MAX):
            self._deleting = set(self._unused)
            lines += [f"delete chain {T} {c}" for c in sorted(self._deleting)]
        stats = {"full": False, "services": len(self._rules), "rewritten": rewritten, "lines": len(lines),
                 "unused_chains": len(self._unused - self._deleting)}
        return ("\n".join(lines) + "\n") if lines else "", stats

    # -- leaks ---------------------------------------------------------------------------------

    async def count_leaks(self) -> dict[str, int]:
        """What the table holds beyond its skeleton: service and endpoint chains, their rules,
        affinity sets, and elements of the service maps and cluster-ips. All 0 after an empty
        sync or ``cleanup`` (which also removes the table)."""
        return count_table(await _nft_json("list", "table", FAMILY, TABLE))


def count_table(listing: dict | None) -> dict[str, int]:
    counts = {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
    for item in (listing or {}).get("nftables", []):
        if "chain" in item and item["chain"]["name"] not in SKELETON_CHAINS:
            counts["chains"] += 1
        elif "rule" in item and item["rule"]["chain"] not in SKELETON_CHAINS:
            counts["rules"] += 1
        elif "set" in item or "map" in item:
            obj = item.get("set") or item.get("map")
            if obj["name"] not in SKELETON_SETS:
                counts["sets"] += 1
            elif obj["name"] != NODEPORT_IPS:
                counts["elements"] += len(obj.get("elem", ()))
    return counts


def ruleset_text(node: NodeContext, services: ServicePortMap, endpoints: EndpointsMap,
                 spns: Iterable[ServicePortName] | None = None) -> str:
    """A whole ruleset for these services as one ``nft -f`` text, from an empty table (tests,
    ``nft -c``)."""
    p = Proxier(node)
    p._base_chains_recreated = True
    lines = skeleton(node)
    adds: dict[str, list[tuple[str, str]]] = {}
    for spn in (spns if spns is not None else services):
        rules = p._wanted(spn, services, endpoints)
        if rules is None:
            continue
        p._rules[spn] = rules
        p._own(spn, rules, None, set())
        p._chain_lines(rules, None, lines)
    for key in p._owners:
        adds.setdefault(key[0], []).append((key[1], p._effective(key)))
    lines += _elements_lines("add", adds)
    return "\n".join(lines) + "\n"
